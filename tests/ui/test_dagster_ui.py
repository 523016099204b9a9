"""The Dagster UI as a person uses it, in headless chromium, over `dagster dev` with demo data.

One `dagster dev` serves every browser test (fixtures in conftest.py): the tests that change
its state are marked `changes_ui_stack` and run after those that read the demo's. Each test checks what is
on the page, saves screenshots under tests/artifacts/ui/, and, where the page reflects state
kept elsewhere, also checks that state (the lake's `_SUCCESS` markers, the instance's
sensor and schedule status) so a page that only looks right does not pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connectors.metastore import Metastore
from tests.support import wait_for
from tests.support.dagster_dev import graphql
from tests.ui.browser import FAILING_CHECK, UiStack, open_ui, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

BACKFILL_TIMEOUT_S = 420  # a run starts a process per step: minutes on a loaded machine


def _products(stack: UiStack) -> list:
    from connectors.spec import load_specs

    return load_specs(Path(stack.env["FLOWSUITE_PRODUCTS_DIR"]))


def test_asset_graph_shows_each_product_group(page, ui_stack: UiStack):
    for spec in _products(ui_stack):
        open_ui(page, f"{ui_stack.url}/locations/flowsuite/asset-groups/{spec.name}", ui_stack)
        # The group page is titled by the group and draws one node per asset of the product.
        page.get_by_text("Asset Group in").first.wait_for()
        expected = ["landed", "hourly"] + (["warehouse"] if spec.sinks.database else [])
        for name in expected:
            heading = page.get_by_text(name, exact=True).first
            heading.wait_for()
            assert heading.is_visible(), f"{spec.name}/{name} is not drawn in group {spec.name}"
        assert page.get_by_text(spec.name, exact=True).first.is_visible()
        # landed was materialized by the demo: its node says so.
        if spec.name == "clicks":
            page.get_by_text("Materialized").first.wait_for()
        shot(page, f"asset-graph-{spec.name}")


def test_asset_checks_show_state_and_observed_values(page, ui_stack: UiStack):
    open_ui(page, f"{ui_stack.url}/assets/clicks/landed?view=checks", ui_stack)
    page.get_by_text(re.compile(r"Checks \(\d+\)")).first.wait_for()
    # The demo's real checks passed; the test's extra warn expectation failed on purpose.
    passing = ["values_between__cost_micros", "values_match_regex__partner_id", "records_accounted"]
    for name in passing:
        assert _listed_check_state(page, name) == "Succeeded", name
    assert _listed_check_state(page, FAILING_CHECK) == "Failed"

    _open_check(page, FAILING_CHECK, 'expect_column_max_to_be_between(column="cost_micros"')
    assert page.get_by_text("non-blocking", exact=True).first.is_visible()
    # The observed value is the batch's real maximum: above the 1,000 the expectation allows.
    observed = _metadata_value(page, "observed_value")
    assert observed is not None and int(observed.replace(",", "")) > 1000, observed
    assert _metadata_value(page, "severity") == "warn"
    shot(page, "check-failed-observed-value")

    _open_check(
        page,
        "values_between__cost_micros",
        'expect_column_values_to_be_between(column="cost_micros"',
    )
    assert page.get_by_text("blocking", exact=True).first.is_visible()
    assert _metadata_value(page, "unexpected_count") == "0"
    assert int(_metadata_value(page, "element_count").replace(",", "")) > 1000
    shot(page, "check-passed")


def _listed_check_state(page, name: str) -> str:
    """'Succeeded' / 'Failed' / ... as the checks list shows it beside the check's name.

    Long names are middle-truncated on the page; the full name is the row's title.
    """
    title = page.get_by_title(name, exact=True).first
    title.wait_for()
    row = title.locator("xpath=..")
    text = row.inner_text()
    match = re.search(r"(Succeeded|Failed|Warning|Errored|Skipped|Not evaluated|Running)", text)
    assert match, f"no state beside check {name}: {text!r}"
    return match.group(1)


def _open_check(page, name: str, about: str) -> None:
    """Select a check in the list and wait for its panel (`about`: text of its description)."""
    page.get_by_title(name, exact=True).first.click()
    page.get_by_text(about).first.wait_for()
    page.get_by_text("Evaluation result").first.wait_for()
    page.get_by_text("expectation_type", exact=True).first.wait_for()


def _metadata_value(page, key: str) -> str | None:
    """The value shown beside a metadata key in the check's detail panel."""
    text = page.inner_text("body")
    match = re.search(rf"^{re.escape(key)}\s+(\S[^\n\t]*)", text, re.M)
    return match.group(1).strip() if match else None


@pytest.mark.changes_ui_stack(1, "rebuilds the two oldest hours (a new generation each)")
def test_backfill_two_hours_from_the_ui(page, ui_stack: UiStack):
    metastore = Metastore(ui_stack.env_metastore_url)
    try:
        hours = sorted(h.hour for h in metastore.hours("clicks"))[:2]  # the oldest two: closed
        markers_before = metastore.marked_hours("clicks")
    finally:
        metastore.dispose()
    assert len(hours) == 2, hours
    keys = [f"{h}:00" for h in hours]

    open_ui(page, f"{ui_stack.url}/assets/clicks/hourly", ui_stack)
    page.get_by_role("button", name=re.compile("Materialize")).first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Partition selection").first.wait_for()
    selection = dialog.get_by_placeholder(re.compile("partition", re.I)).first
    selection.click()
    selection.fill(f"[{keys[0]}...{keys[1]}]")
    selection.press("Enter")
    # exact: the dialog's partition list may also show a line that contains these words
    dialog.get_by_text("2 partitions", exact=True).first.wait_for()
    shot(page, "backfill-dialog")
    dialog.get_by_role("button", name="Launch backfill").click()
    created = page.get_by_text(re.compile(r"Created backfill \w+")).first
    created.wait_for()
    backfill_id = created.inner_text().split()[-1]

    # Poll the partitions view until each hour's latest materialization is the backfill's
    # replay (the demo compacted these hours already: only a rebuild says `replay`).
    open_ui(page, f"{ui_stack.url}/assets/clicks/hourly?view=partitions", ui_stack)
    def rebuilt(key: str) -> bool:
        if _partition_rebuilt_by_replay(page, key):
            return True
        page.reload()  # the view does not refresh itself: look again at a fresh page
        return False

    for key in keys:
        wait_for(lambda key=key: rebuilt(key), BACKFILL_TIMEOUT_S, interval=3,
                 what=f"{key} rebuilt by backfill {backfill_id}", detail=ui_stack.log_tail)
    # The status counter is read from Dagster's partition-status cache, which can trail the
    # materialization events shown above by a refresh: poll it too rather than read it once.
    def materialized_count() -> int:
        counter = page.get_by_text(re.compile(r"^Materialized \(\d+\)$")).first
        counter.wait_for()
        count = int(re.search(r"\d+", counter.inner_text()).group())
        if count < 2:
            page.reload()
        return count

    wait_for(lambda: materialized_count() >= 2, 60, interval=3,
             what="the partitions view to count both rebuilt hours as materialized",
             detail=ui_stack.log_tail)
    shot(page, "backfill-partitions-materialized")

    # The lake agrees: each hour was rebuilt (a new generation) and marked with _SUCCESS.
    metastore = Metastore(ui_stack.env_metastore_url)
    try:
        markers_after = metastore.marked_hours("clicks")
    finally:
        metastore.dispose()
    for hour in hours:
        assert markers_after.get(hour, 0) > markers_before.get(hour, 0), (hour, markers_after)
        day, hh = hour.rsplit("-", 1)
        marker = Path(ui_stack.home) / "lake" / "clicks" / f"dt={day}" / f"hour={hh}" / "_SUCCESS"
        assert marker.exists(), f"no _SUCCESS for {hour}"


def _partition_rebuilt_by_replay(page, key: str) -> bool:
    """Select partition `key` (materialized ones only) and read its latest materialization."""
    missing = page.get_by_text(re.compile(r"^Missing \(\d+\)$")).first
    missing.wait_for()
    box = page.locator("label", has=missing).locator("input[type=checkbox]")
    if box.count() and box.first.is_checked():
        missing.click()  # hide the missing hours: the list is the materialized ones
    item = page.get_by_text(key, exact=True).first
    try:
        item.wait_for(timeout=5_000)
    except Exception:  # noqa: BLE001 - not materialized yet
        return False
    item.click()
    page.get_by_text("Latest materialization").first.wait_for()
    try:
        page.get_by_text("mode", exact=True).first.wait_for(timeout=5_000)
    except Exception:  # noqa: BLE001 - no materialization metadata yet
        return False
    return _metadata_value(page, "mode") == "replay"


@pytest.mark.changes_ui_stack(3, "turns on the sensor and the schedule: they would land and compact what later tests produce")
@pytest.mark.parametrize(
    "kind, name",
    [("sensors", "clicks_offsets"), ("schedules", "hourly_compaction")],
)
def test_sensor_and_schedule_listed_and_startable(page, ui_stack: UiStack, kind: str, name: str):
    open_ui(page, f"{ui_stack.url}/automation", ui_stack)
    page.get_by_text(name, exact=True).first.wait_for()
    assert page.get_by_text("clicks_offsets", exact=True).first.is_visible()
    assert page.get_by_text("hourly_compaction", exact=True).first.is_visible()
    assert _instigator_status(ui_stack, kind, name) == "STOPPED"  # both ship stopped

    open_ui(page, f"{ui_stack.url}/locations/flowsuite/{kind}/{name}", ui_stack)
    page.get_by_text("Running", exact=True).first.wait_for()  # the row that holds the toggle
    assert name in page.inner_text("body")
    toggle = page.get_by_role("checkbox").first
    assert not toggle.is_checked()
    # The input is drawn as a switch: a person clicks its label.
    page.locator(f'label[for="{toggle.get_attribute("id")}"]').click()
    wait_for(lambda: _instigator_status(ui_stack, kind, name) == "RUNNING", 30, interval=0.5,
             what=f"{kind[:-1]} {name} RUNNING after the toggle", detail=ui_stack.log_tail)
    page.reload()
    page.get_by_text("Running", exact=True).first.wait_for()
    page.wait_for_function("() => document.querySelector('input[type=checkbox]')?.checked === true")
    assert page.get_by_role("checkbox").first.is_checked()
    shot(page, f"{kind[:-1]}-{name}-running")

    open_ui(page, f"{ui_stack.url}/automation", ui_stack)
    page.get_by_text(name, exact=True).first.wait_for()
    # The list loads each toggle's state after the names: wait for the one just turned on.
    page.wait_for_function("() => [...document.querySelectorAll('input[type=checkbox]')].some(c => c.checked)")
    shot(page, f"automation-after-{name}")


def _instigator_status(stack: UiStack, kind: str, name: str) -> str:
    selector = '{repositoryLocationName: "flowsuite", repositoryName: "__repository__", %s: "%s"}'
    if kind == "sensors":
        query = (
            "{ sensorOrError(sensorSelector: %s) { ... on Sensor { sensorState { status } } } }"
            % (selector % ("sensorName", name))
        )
        return graphql(stack.url, query)["data"]["sensorOrError"]["sensorState"]["status"]
    query = (
        "{ scheduleOrError(scheduleSelector: %s) { ... on Schedule { scheduleState { status } } } }"
        % (selector % ("scheduleName", name))
    )
    return graphql(stack.url, query)["data"]["scheduleOrError"]["scheduleState"]["status"]
