"""A `dagster dev` (or `dg dev`) the tests start: its executables, its GraphQL API, and stopping it.

Shared by the browser tests (tests/ui/) and the CLI tests that start the UI
(tests/orchestration/test_dg_dev.py). `dagster dev` ignores SIGTERM: `stop_group` sends SIGINT
to its process group, then SIGKILL to what is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path


def bin_path(name: str) -> str:
    """An executable of the venv the tests run in (`dagster`, `dg`, `flowsuite`, `python`)."""
    return str(Path(sys.executable).with_name(name))


def graphql(url: str, query: str, timeout: float = 5.0) -> dict:
    """The answer of the webserver at `url` to a GraphQL query."""
    req = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def location_loaded(url: str) -> bool:
    """True once the code location `flowsuite` is loaded (not merely the webserver up)."""
    try:
        answer = graphql(
            url,
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename } } } } }",
        )
    except OSError:
        return False
    entries = (answer.get("data") or {}).get("workspaceOrError", {}).get("locationEntries") or []
    for e in entries:
        if e["name"] == "flowsuite" and e["loadStatus"] == "LOADED":
            kind = (e.get("locationOrLoadError") or {}).get("__typename")
            if kind != "RepositoryLocation":
                raise RuntimeError(f"code location flowsuite failed to load: {answer}")
            return True
    return False


def stop_group(proc: subprocess.Popen) -> None:
    """SIGINT the process group (dagster dev ignores SIGTERM), then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the webserver's and daemon's children too
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
