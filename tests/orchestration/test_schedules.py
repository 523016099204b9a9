"""The hourly_compaction schedule, evaluated at fixed times, requests exactly the right hours."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from assets.hourly import build_hourly_definitions
from assets.table import build_table_definitions
from connectors.flows import compact_hour
from orchestration.resources import FlowsuiteResource
from orchestration.schedules import build_schedules
from tests.support.compaction import HOURS, LATER, clicks_spec, land_in_rounds
from tests.support.runs import run_at


@pytest.fixture
def product(topic, kafka_bootstrap, tmp_path):
    spec = clicks_spec(topic)
    res = FlowsuiteResource(
        kafka_bootstrap=kafka_bootstrap, lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'meta.db'}", warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}",
    )
    land_in_rounds(spec, kafka_bootstrap, res.lake(), res.metastore(), rounds=1, per_round=300)
    return spec, res


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def _tick(schedule, res, when):
    spec = schedule._flowsuite_spec
    repo = dg.Definitions.merge(
        build_hourly_definitions(spec), build_table_definitions(spec),  # clicks: hourly, then its Iceberg table
        dg.Definitions(schedules=[schedule], resources={"flowsuite": res}),
    ).get_repository_def()
    # A schedule context opens its own instance from the given one's ref (for `context.log`) and
    # makes that instance's state storage the process's current one until the context exits:
    # left open, the next `Definitions` load in the process finds a dead instance behind it.
    with dg.build_schedule_context(
        instance=schedule._instance, scheduled_execution_time=when, resources={"flowsuite": res}, repository_def=repo
    ) as ctx:
        return schedule.evaluate_tick(ctx)


def _keys(data):
    return sorted(r.run_key for r in (data.run_requests or []))


def test_schedule_requests_exactly_the_closed_due_hours(product, instance):
    spec, res = product
    [schedule] = build_schedules([spec])
    schedule._flowsuite_spec, schedule._instance = spec, instance
    assert schedule.name == "hourly_compaction" and schedule.cron_schedule == "5 * * * *"
    assert schedule.execution_timezone == "UTC" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    p = spec.name
    # 12:05: only 10:00 is closed (its end 11:00 + 10 min lateness)
    assert _keys(_tick(schedule, res, datetime(2026, 1, 10, 12, 5, tzinfo=UTC))) == [f"{p}:{HOURS[0]}:g0"]
    # 13:05: 10 and 11 (12 closes at 13:10)
    assert _keys(_tick(schedule, res, datetime(2026, 1, 10, 13, 5, tzinfo=UTC))) == [f"{p}:{h}:g0" for h in HOURS[:2]]
    data = _tick(schedule, res, datetime(2026, 1, 10, 14, 5, tzinfo=UTC))
    assert _keys(data) == [f"{p}:{h}:g0" for h in HOURS]
    r = data.run_requests[0]
    assert r.partition_key == f"{HOURS[0]}:00" and r.asset_selection == [dg.AssetKey([p, "hourly"]), dg.AssetKey([p, "table"])]
    # the same tick again: the same keys (Dagster dedupes them), nothing new
    assert _keys(_tick(schedule, res, datetime(2026, 1, 10, 14, 5, tzinfo=UTC))) == _keys(data)

    # compacted hours drop out; a blocked one is skipped with its reason
    compact_hour(spec, HOURS[0], run_at(lake=res.lake(), metastore=res.metastore(), now=LATER))
    res.metastore().block_hours(p, [HOURS[1]], "not_null failed")
    assert _keys(_tick(schedule, res, datetime(2026, 1, 10, 14, 5, tzinfo=UTC))) == [f"{p}:{HOURS[2]}:g0"]
    compact_hour(spec, HOURS[2], run_at(lake=res.lake(), metastore=res.metastore(), now=LATER))
    data = _tick(schedule, res, datetime(2026, 1, 10, 14, 5, tzinfo=UTC))
    assert not data.run_requests and "not_null failed" in data.skip_message


def test_reopened_hour_gets_a_new_run_key(product, kafka_bootstrap, instance):
    from connectors.flows import land
    from examples.demo_data import produce

    spec, res = product
    [schedule] = build_schedules([spec])
    schedule._flowsuite_spec, schedule._instance = spec, instance
    compact_hour(spec, HOURS[0], run_at(lake=res.lake(), metastore=res.metastore(), now=LATER))
    late = (b"late", b'{"event_id":"late","user_id":"u","partner_id":"p-001","ad_id":"a","kind":"click",'
            b'"cost_micros":1,"event_time":"2026-01-10T10:30:00Z"}', True)
    produce(kafka_bootstrap, spec.topic, [late])
    land(spec, lake=res.lake(), metastore=res.metastore(), bootstrap=kafka_bootstrap, idle_timeout_s=10)
    keys = _keys(_tick(schedule, res, datetime(2026, 1, 10, 14, 5, tzinfo=UTC)))
    assert f"{spec.name}:{HOURS[0]}:g1" in keys
