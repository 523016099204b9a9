"""Freshness of clicks/hourly in the UI after the demo, and a late hour turning the product late.

Over the browser tests' shared `dagster dev` with demo data (tests/ui/conftest.py), after the
backfill test and before the sensor and schedule are turned on (`changes_ui_stack`): Dagster's
freshness state of `clicks/hourly` (its cron policy, evaluated by the daemon) passes after the
demo's compactions and the backfill's rebuilds. Then a late record lands in the oldest sealed demo hour: the hour is reopened (its
`_SUCCESS` goes), `hours_sealed` fails naming it and `product_health` says `late` — what the
policy, judged on the latest materialization, cannot see (docs/dagster.md). Screenshots go to
tests/artifacts/ui/ (freshness-*.png), copied into docs/screenshots/ for the README's UI tour.
"""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from connectors.lake import parse_hour_key
from connectors.metastore import Metastore
from examples.demo_data import generate_clicks, produce
from tests.support import wait_for
from tests.support.dagster_dev import bin_path, graphql
from tests.ui.browser import REPO, UiStack, open_ui, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

DAEMON_WAIT_S = 180  # the freshness daemon evaluates every 30 s; first ticks are slow on a busy machine

FRESHNESS_QUERY = """{ assetNodes(assetKeys: [{path: ["clicks", "hourly"]}]) {
  freshnessStatusInfo { freshnessStatus }
  internalFreshnessPolicy { __typename ... on CronFreshnessPolicy { deadlineCron } } } }"""

RUN_CHECKS = """
import dagster as dg
from orchestration.definitions import defs

selection = [dg.AssetCheckKey(dg.AssetKey(["clicks", "hourly"]), "hours_sealed"),
             dg.AssetCheckKey(dg.AssetKey(["clicks", "landed"]), "product_health")]
job = dg.define_asset_job("health_checks", selection=dg.AssetSelection.checks(*selection))
d = dg.Definitions.merge(defs(), dg.Definitions(jobs=[job]))
result = d.resolve_job_def("health_checks").execute_in_process(instance=dg.DagsterInstance.get(), raise_on_error=False)
for e in result.all_events:
    if e.event_type_value == "ASSET_CHECK_EVALUATION":
        print(e.asset_check_evaluation_data.check_name, e.asset_check_evaluation_data.passed)
"""


def _freshness(stack: UiStack) -> tuple[str, str | None]:
    [node] = graphql(stack.url, FRESHNESS_QUERY, timeout=30)["data"]["assetNodes"]
    policy = node.get("internalFreshnessPolicy") or {}
    return (node.get("freshnessStatusInfo") or {}).get("freshnessStatus", "UNKNOWN"), policy.get("deadlineCron")


def _check_state(page, name: str) -> str:
    """'Succeeded' / 'Failed' / ... as the checks list shows it under the check's name (its title)."""
    title = page.get_by_title(name, exact=True).first
    title.wait_for()
    text = title.locator("xpath=..").inner_text()
    match = re.search(r"(Succeeded|Failed|Warning|Errored|Skipped|Not evaluated|Running)", text)
    assert match, f"no state beside check {name}: {text!r}"
    return match.group(1)


@pytest.mark.changes_ui_stack(2, "reopens the oldest sealed hour with a late record")
def test_freshness_passes_after_the_demo_and_a_late_hour_turns_the_product_late(page, ui_stack: UiStack):
    seen: list[tuple[str, str | None]] = []

    def healthy() -> bool:
        seen.append(_freshness(ui_stack))
        return seen[-1][0] == "HEALTHY"

    wait_for(healthy, DAEMON_WAIT_S, interval=5, what="clicks/hourly freshness HEALTHY after the demo",
             detail=lambda: f"freshness {seen[-1][0]}:\n{ui_stack.log_tail()}")
    assert seen[-1][1] == "20 * * * *"
    open_ui(page, f"{ui_stack.url}/assets/clicks/hourly", ui_stack)
    page.get_by_text("Freshness policy").first.wait_for()
    page.get_by_text("Passing", exact=True).first.wait_for()  # the policy's state, as the sidebar shows it
    assert page.get_by_text("At 20 minutes past the hour").first.is_visible()
    shot(page, "freshness-hourly-after-demo")

    metastore = Metastore(ui_stack.env_metastore_url)
    try:
        sealed = sorted(h.hour for h in metastore.hours("clicks") if h.state == "compacted")
    finally:
        metastore.dispose()
    assert sealed, "the demo sealed no hour"
    oldest = sealed[0]
    day, hh = oldest.rsplit("-", 1)
    marker = Path(ui_stack.home) / "lake" / "clicks" / f"dt={day}" / f"hour={hh}" / "_SUCCESS"
    assert marker.exists()

    # Late records for the oldest sealed hour, landed as an operator would: `flowsuite land`.
    late_time = parse_hour_key(oldest) + timedelta(minutes=59, seconds=59)
    report = produce(ui_stack.env["FLOWSUITE_KAFKA_BOOTSTRAP"], "clicks",
                     generate_clicks(30, 1, 0.0, seed=31, now=late_time), partitions=2)
    assert report.produced == 30
    landed = subprocess.run([bin_path("flowsuite"), "land", "clicks"], cwd=REPO, env=ui_stack.env,
                            capture_output=True, text=True, timeout=300)
    assert landed.returncode == 0, landed.stdout[-2000:] + landed.stderr[-2000:]
    assert not marker.exists(), f"hour {oldest} kept its _SUCCESS after a late record"

    checked = subprocess.run([bin_path("python"), "-c", RUN_CHECKS], cwd=REPO, env=ui_stack.env,
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "hours_sealed False" in checked.stdout and "product_health False" in checked.stdout, checked.stdout

    open_ui(page, f"{ui_stack.url}/assets/clicks/hourly?view=checks", ui_stack)
    page.get_by_text(re.compile(r"Checks \(\d+\)")).first.wait_for()
    assert _check_state(page, "hours_sealed") == "Failed"
    page.get_by_title("hours_sealed", exact=True).first.click()
    page.get_by_text(oldest).first.wait_for()  # the unsealed hour is named in the metadata
    shot(page, "freshness-hourly-late-hour")

    open_ui(page, f"{ui_stack.url}/assets/clicks/landed?view=checks", ui_stack)
    page.get_by_text(re.compile(r"Checks \(\d+\)")).first.wait_for()
    assert _check_state(page, "product_health") == "Failed"
    page.get_by_title("product_health", exact=True).first.click()
    page.get_by_text(re.compile(r"^late: hour " + re.escape(oldest))).first.wait_for()  # the status and why
    assert page.get_by_text("late", exact=True).first.is_visible()  # metadata `status`
    shot(page, "product-health-late")
