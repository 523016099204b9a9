"""`dg dev` (the dg CLI) and `dagster dev -w workspace.yaml` both start the UI of the code location
`flowsuite`: the webserver answers /server_info and its GraphQL API has the location loaded.

Each is stopped as `dagster dev` must be (it ignores SIGTERM): SIGINT to its process group, then
SIGKILL of the group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from connectors.settings import REPO_ROOT
from orchestration.services.broker import free_port
from tests.support import wait_while_running
from tests.support.dagster_dev import bin_path, location_loaded, stop_group

REPO = Path(REPO_ROOT)
SERVE_TIMEOUT_S = 300  # webserver, daemon and a code server on shared cores

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("command", ["dg dev", "dagster dev"])
def test_the_ui_starts_and_serves_the_code_location(command: str, tmp_path: Path):
    port = free_port()
    args = {
        "dg dev": [bin_path("dg"), "dev", "--host", "127.0.0.1", "--port", str(port)],
        "dagster dev": [bin_path("dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
    }[command]
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSUITE_")}
    env.update(FLOWSUITE_HOME=str(tmp_path), DAGSTER_HOME=str(tmp_path / "dagster"), VIRTUAL_ENV=sys.prefix,
               PATH=f"{Path(sys.executable).parent}:{env['PATH']}", NO_COLOR="1")
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_while_running(proc, lambda: location_loaded(url), SERVE_TIMEOUT_S,
                           f"{command} to serve the code location", log, interval=1)
        with urllib.request.urlopen(f"{url}/server_info", timeout=10) as resp:
            info = json.loads(resp.read())
        assert "dagster_webserver_version" in info, info
    finally:
        stop_group(proc)
    assert proc.poll() is not None
    with pytest.raises(OSError):  # nothing answers on the port once the group is stopped
        urllib.request.urlopen(f"{url}/server_info", timeout=3)
