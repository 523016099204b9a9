"""One count: partner_engagement computed once from clicks' committed lake rows, materialized to
the lake (hour partitions, live in the metastore) and the warehouse (UPSERT), and the cross-plane
check that passes on real data and fails, naming the cell, when one warehouse row is altered."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from connectors.flows import land
from connectors.lake import hour_key
from connectors.spec import parse_spec_file
from examples.demo_data import generate_clicks, produce
from examples.engagement import (
    PRODUCT,
    EngagementTable,
    compare_planes,
    materialize_hour,
    read_lake,
    sync_warehouse,
)
from examples.engagement_assets import (
    CROSS_PLANE_CHECK,
    ENGAGEMENT_HOURLY,
    ENGAGEMENT_WAREHOUSE,
    build_engagement_definitions,
    cross_plane_result,
)
from orchestration.resources import FlowsuiteResource
from tests.support import read_hive

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC) - timedelta(hours=1)  # partitions must exist: no future hours


@pytest.fixture
def landed_clicks(topic, kafka_bootstrap, tmp_path):
    spec = parse_spec_file(REPO / "dataproducts" / "clicks.yaml").model_copy(update={"topic": topic})
    records = list(generate_clicks(4000, 3, 0.01, seed=5, now=NOW))
    produce(kafka_bootstrap, topic, records)
    flowsuite = FlowsuiteResource(
        kafka_bootstrap=kafka_bootstrap, lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'meta.db'}", warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}",
    )
    result = land(spec, lake=flowsuite.lake(), metastore=flowsuite.metastore(), bootstrap=kafka_bootstrap)
    assert result.landed > 3500
    return spec, flowsuite, result


def expected_counts(lake_root: Path) -> dict[tuple[str, str], tuple[int, int, int]]:
    """An independent count: a batch reader over the hive layout, in plain Python."""
    t = read_hive(lake_root / "clicks", columns=["event_id", "user_id", "partner_id", "kind", "event_time"]).to_pylist()
    clicks, users, imps = defaultdict(set), defaultdict(set), defaultdict(set)
    for r in t:
        k = (r["partner_id"], hour_key(r["event_time"]))
        (clicks if r["kind"] == "click" else imps)[k].add(r["event_id"])
        if r["kind"] == "click":
            users[k].add(r["user_id"])
    return {k: (len(clicks[k]), len(users[k]), len(imps[k])) for k in clicks.keys() | imps.keys()}


def test_assets_materialize_both_planes_and_the_check_passes_then_fails_on_an_altered_row(landed_clicks, tmp_path):
    spec, flowsuite, result = landed_clicks
    defs = build_engagement_definitions(spec)
    assets = [a for a in defs.assets]
    hours = sorted(result.hours)
    for h in hours:
        run = dg.materialize([*assets, *defs.asset_checks], partition_key=f"{h}:00", resources={"flowsuite": flowsuite},
                             selection=[ENGAGEMENT_HOURLY, ENGAGEMENT_WAREHOUSE])
        assert run.success
        evals = [e.asset_check_evaluation_data for e in run.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert [(e.check_name, e.passed) for e in evals] == [(CROSS_PLANE_CHECK, True)]

    # The lake plane: one live file per hour under partner_engagement/dt=…/hour=…, in the metastore.
    live = flowsuite.metastore().live_files(PRODUCT)
    assert sorted(f.hour for f in live) == hours
    assert all(f.path.startswith(f"{PRODUCT}/dt=") and "/hour=" in f.path for f in live)
    lake_rows = read_lake(flowsuite.lake(), flowsuite.metastore()).to_pylist()
    got = {(r["partner_id"], hour_key(r["hour"])): (r["clicks"], r["unique_users"], r["impressions"]) for r in lake_rows}
    assert got == expected_counts(tmp_path / "lake")
    # The warehouse plane holds the same numbers.
    table = EngagementTable(flowsuite.warehouse_url)
    wh = {(r["partner_id"], hour_key(r["hour"])): (r["clicks"], r["unique_users"], r["impressions"]) for r in table.read().to_pylist()}
    assert wh == got

    # Someone "fixes" one warehouse row by hand: the check fails and names the cell.
    (pid, hour), (clicks, _, _) = sorted(got.items())[0]
    with table.engine.begin() as conn:
        conn.execute(sa.update(table.table).where(table.table.c.partner_id == pid).values(clicks=clicks + 7))
    table.dispose()
    check = cross_plane_result(flowsuite)
    assert not check.passed
    diffs = check.metadata["differences"].value
    assert {"partner_id": pid, "hour": hour, "column": "clicks", "lake": clicks, "warehouse": clicks + 7} in diffs
    assert f"{pid} {hour} clicks: lake={clicks} warehouse={clicks + 7}" in check.description


def test_recompute_replaces_the_hour_and_the_upsert_converges(landed_clicks, request):
    spec, flowsuite, result = landed_clicks
    lake, ms = flowsuite.lake(), flowsuite.metastore()
    hour = sorted(result.hours)[0]
    first = materialize_hour(lake, ms, hour)
    second = materialize_hour(lake, ms, hour)  # the same count again: a new generation replaces the old
    assert second.generation == first.generation + 1 and second.replaced == [first.path]
    assert [f.path for f in ms.live_files(PRODUCT, hour)] == [second.path] and not lake.exists(first.path)
    urls = [flowsuite.warehouse_url]
    try:
        urls.append(request.getfixturevalue("pg_url"))
    except pytest.skip.Exception:
        pass
    for url in urls:
        table = EngagementTable(url)
        try:
            sync_warehouse(lake, ms, table)
            # a stale partner row of the hour (gone from the lake) is deleted by the next upsert
            with table.engine.begin() as conn:
                conn.execute(sa.insert(table.table).values(
                    partner_id="p-999", hour=table._bind_hour(datetime.fromisoformat(f"{hour[:10]}T{hour[11:]}:00+00:00")),
                    clicks=1, unique_users=1, impressions=0, lake_generation=0, updated_at=0.0))
            assert compare_planes(lake, ms, table)[1][0].column == "row"
            totals = sync_warehouse(lake, ms, table, [hour])
            assert totals["deleted"] == 1
            compared, diffs = compare_planes(lake, ms, table)
            assert compared == first.rows and diffs == []
        finally:
            table.dispose()
