"""The P/hourly asset through the Dagster API: one hour, a backfill of several hours as the UI
launches it (a partition range in one run, tagged as a backfill → replay), a blocked hour."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.hourly import HourlyConfig, build_hourly_definitions, choose_mode
from orchestration.resources import FlowsuiteResource
from tests.support.compaction import (
    HOURS,
    clicks_spec,
    hour_rows,
    land_in_rounds,
    sorted_rows,
)


@pytest.fixture
def product(topic, kafka_bootstrap, tmp_path):
    spec = clicks_spec(topic)
    res = FlowsuiteResource(
        kafka_bootstrap=kafka_bootstrap, lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'meta.db'}", warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}",
    )
    land_in_rounds(spec, kafka_bootstrap, res.lake(), res.metastore(), rounds=2, per_round=400)
    return spec, res


def _asset(spec):
    return build_hourly_definitions(spec).assets[0]


def test_materialize_one_hour_compacts_it(product):
    spec, res = product
    lake, metastore = res.lake(), res.metastore()
    before = hour_rows(lake, metastore, spec.name, HOURS[0])
    with dg.instance_for_test() as instance:
        result = dg.materialize([_asset(spec)], partition_key=f"{HOURS[0]}:00", resources={"flowsuite": res}, instance=instance)
    assert result.success
    meta = result.asset_materializations_for_node(_asset(spec).op.name)[0].metadata
    assert meta["mode"].value == "compact" and meta["files_after"].value == 1 and meta["files_before"].value >= 4
    assert meta["generation"].value == 1
    assert sorted_rows(hour_rows(lake, metastore, spec.name, HOURS[0])) == sorted_rows(before)


def test_backfill_of_several_hours_rebuilds_by_replay(product):
    spec, res = product
    lake, metastore = res.lake(), res.metastore()
    before = {h: hour_rows(lake, metastore, spec.name, h) for h in HOURS}
    tags = {
        "dagster/backfill": "testbackfill",
        "dagster/asset_partition_range_start": f"{HOURS[0]}:00",
        "dagster/asset_partition_range_end": f"{HOURS[-1]}:00",
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([_asset(spec)], resources={"flowsuite": res}, instance=instance, tags=tags)
        assert result.success
        mats = result.asset_materializations_for_node(_asset(spec).op.name)
        assert sorted(m.partition for m in mats) == [f"{h}:00" for h in HOURS]
        assert mats[0].metadata["mode"].value == "replay"
        assert "kafka" in mats[0].metadata["summary"].value
    for h in HOURS:
        assert [f.kind for f in metastore.live_files(spec.name, h)] == ["compacted"]
        assert sorted_rows(hour_rows(lake, metastore, spec.name, h)) == sorted_rows(before[h])


def test_blocked_hour_fails_the_run_with_its_reason(product):
    spec, res = product
    res.metastore().block_hours(spec.name, [HOURS[1]], "volume check failed: 3 rows vs median 900")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [_asset(spec)], partition_key=f"{HOURS[1]}:00", resources={"flowsuite": res}, instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "volume check failed" in failure.step_failure_data.error.message
    assert all(f.kind == "landed" for f in res.metastore().live_files(spec.name, HOURS[1]))


def test_mode_choice():
    assert choose_mode({}, HourlyConfig()) == "compact"
    assert choose_mode({"dagster/backfill": "x"}, HourlyConfig()) == "replay"
    assert choose_mode({"dagster/backfill": "x"}, HourlyConfig(replay=False)) == "compact"
    assert choose_mode({"flowsuite/mode": "replay"}, HourlyConfig()) == "replay"
