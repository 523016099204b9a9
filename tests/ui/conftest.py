"""Fixtures of the browser tests: a real `dagster dev` over demo data, and headless chromium.

- `ui_stack` (session): a temp FLOWSUITE_HOME + DAGSTER_HOME, an embedded broker on a free port,
  demo clicks produced and landed through `flowsuite demo` (so the runs are in the instance the
  UI reads), then `dagster dev -w workspace.yaml -p <free port>` (webserver + daemon, the daemon
  runs backfills, sensors and schedules) until it serves the code location. One stack serves
  every browser test file: starting it (the demo, then the code location) takes minutes.
- `browser` (session) / `page` (function): Debian's `/usr/bin/chromium` driven by playwright
  (`playwright install` cannot download browsers here). A missing chromium skips locally and
  fails under CI=true (`make browsers` / `.ci/run` install it).

Since the stack is shared, a test that changes what the others read is marked
`@pytest.mark.changes_ui_stack(n, "what it changes")`: unmarked tests run first, on the demo's
state as `flowsuite demo` left it, then the marked ones in the order of n, whatever the files'
order (`pytest_collection_modifyitems` below).

`dagster dev` ignores SIGTERM: it is stopped with SIGINT, then SIGKILL of its process group.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.services.broker import free_port, running_broker
from tests.support import wait_while_running
from tests.support.dagster_dev import bin_path, location_loaded, stop_group
from tests.ui.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DEMO_EVENTS,
    DEMO_HOURS,
    IN_CI,
    REPO,
    SERVE_TIMEOUT_S,
    UiStack,
    products_with_failing_check,
    shot,
)


@pytest.fixture(scope="session")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiStack]:
    home = tmp_path_factory.mktemp("ui_home")
    dagster_home = home / "dagster"
    dagster_home.mkdir()
    # No telemetry, and the daemon checks for work often so a backfill finishes quickly.
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    products = products_with_failing_check(home / "dataproducts")
    with running_broker(home=home / "broker-home") as broker:
        env = {
            **os.environ,
            "FLOWSUITE_PRODUCTS_DIR": str(products),
            "FLOWSUITE_HOME": str(home),
            "DAGSTER_HOME": str(dagster_home),
            "FLOWSUITE_KAFKA_BOOTSTRAP": broker.bootstrap,
            "CI": "true",  # no progress bars in the demo's output
        }
        for derived in ("FLOWSUITE_LAKE_URL", "FLOWSUITE_METASTORE_URL", "FLOWSUITE_WAREHOUSE_URL"):
            env.pop(derived, None)
        demo = subprocess.run(
            [
                bin_path("flowsuite"),
                "demo",
                "--events",
                str(DEMO_EVENTS),
                "--hours",
                str(DEMO_HOURS),
                "--seed",
                "7",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert demo.returncode == 0, (
            f"flowsuite demo failed:\n{demo.stdout[-2000:]}\n{demo.stderr[-3000:]}"
        )

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = home / "dagster-dev.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    bin_path("dagster"),
                    "dev",
                    "-w",
                    "workspace.yaml",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack = UiStack(url, home, env, log)
        try:
            wait_while_running(proc, lambda: location_loaded(url), SERVE_TIMEOUT_S,
                               "dagster dev to serve the code location", log, interval=1)
            yield stack
        finally:
            stop_group(proc)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        message = f"chromium not found at {CHROMIUM}; install it with `make browsers` (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message + " (CI=true: browser tests must run)", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, ui_stack: UiStack, request: pytest.FixtureRequest):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            shot(page, f"FAILED-{request.node.name}")
        context.close()


HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests that leave the shared stack changed run after those that read the demo's state.

    Only the items under tests/ui move, among the places they held; the rest keep their order.
    """
    places = [i for i, item in enumerate(items) if HERE in Path(item.path).resolve().parents]

    def rank(item: pytest.Item) -> int:
        marker = item.get_closest_marker("changes_ui_stack")
        return 0 if marker is None else marker.args[0]

    ordered = sorted((items[i] for i in places), key=rank)  # stable: file order within a rank
    for i, item in zip(places, ordered, strict=True):
        items[i] = item


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
