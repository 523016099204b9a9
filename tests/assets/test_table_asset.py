"""The P/table asset through the Dagster API: downstream of P/hourly, publishes the sealed hour
once (a rerun adds nothing), says where and how to read it, refuses an hour not sealed."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.hourly import build_hourly_definitions, hourly_key
from assets.table import build_table_definitions, iceberg_tables, table_key
from orchestration.resources import FlowsuiteResource
from tests.support.compaction import HOURS, clicks_spec, hour_rows, land_in_rounds, pairs


@pytest.fixture
def product(topic, kafka_bootstrap, tmp_path):
    spec = clicks_spec(topic)
    res = FlowsuiteResource(
        kafka_bootstrap=kafka_bootstrap, lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'meta.db'}", warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}",
    )
    land_in_rounds(spec, kafka_bootstrap, res.lake(), res.metastore(), rounds=2, per_round=400)
    return spec, res


def test_hourly_then_table_publishes_the_hour_once_with_its_metadata(product):
    spec, res = product
    hourly, table = build_hourly_definitions(spec).assets[0], build_table_definitions(spec).assets[0]
    assert table.asset_deps[table_key(spec)] == {hourly_key(spec)}  # lineage: … → hourly → table
    with dg.instance_for_test() as instance:
        result = dg.materialize([hourly, table], partition_key=f"{HOURS[0]}:00", resources={"flowsuite": res}, instance=instance)
        assert result.success
        meta = result.asset_materializations_for_node(table.op.name)[0].metadata
        assert meta["table"].value == f"flowsuite.{spec.name}" and meta["published"].value == 1
        tables = iceberg_tables(res)
        current = tables.load(spec.name).current_snapshot().snapshot_id
        assert meta["snapshot_id"].value == str(current) and meta["publish_seq"].value == 1
        assert f"FROM flowsuite.flowsuite.{spec.name}" in meta["query"].value
        assert "2026-01-10 10:00:00 UTC" in meta["query"].value
        got = tables.scan(spec.name)
        assert sorted(pairs(got)) == sorted(pairs(hour_rows(res.lake(), res.metastore(), spec.name, HOURS[0])))

        again = dg.materialize([table], partition_key=f"{HOURS[0]}:00", resources={"flowsuite": res}, instance=instance)
        meta = again.asset_materializations_for_node(table.op.name)[0].metadata
        assert meta["published"].value == 0 and meta["snapshot_id"].value == str(current)

        refused = dg.materialize([table], partition_key=f"{HOURS[1]}:00", resources={"flowsuite": res},
                                 instance=instance, raise_on_error=False)
        assert not refused.success
        failure = next(e for e in refused.all_events if e.is_step_failure)
        assert f"{HOURS[1]}: open" in failure.step_failure_data.user_failure_data.description
    tables.dispose()


def test_the_table_is_in_the_code_location_for_clicks():
    from orchestration.definitions import defs

    graph = defs().resolve_asset_graph()
    assert graph.get(dg.AssetKey(["clicks", "table"])).parent_keys == {dg.AssetKey(["clicks", "hourly"])}
