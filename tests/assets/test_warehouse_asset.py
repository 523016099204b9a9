"""`P/warehouse` through Dagster: it syncs what `P/landed` committed, reports its metadata, and
does not run when a blocking check (a real GX expectation of quality/checks.py) fails on the
landed batch in the same run."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.landing import build_landing_definitions
from assets.warehouse import build_warehouse_definitions, warehouse_key, warehouse_kind
from connectors.spec import DataProductSpec
from connectors.warehouse import WarehouseSink
from examples.demo_data import produce
from orchestration.resources import FlowsuiteResource

T0 = datetime(2026, 11, 26, 10, tzinfo=UTC)


def spec_for(topic: str, name: str, max_amount: int) -> DataProductSpec:
    return DataProductSpec.model_validate(
        {
            "name": name,
            "owner": "team:billing",
            "topic": topic,
            "key": "id",
            "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "int64"},
                       {"name": "ts", "type": "timestamp"}],
            "event_time": {"field": "ts"},
            "partitioning": {"start": "2026-11-01T00:00:00Z"},
            "sinks": {"database": {"deletes": "tombstone"}},
            "quality": {"expectations": [{"type": "expect_column_values_to_be_between",
                                          "kwargs": {"column": "amount", "min_value": 0, "max_value": max_amount}}]},
        }
    )


def produce_some(bootstrap: str, topic: str, n: int) -> dict[str, int]:
    rng = random.Random(2)
    records, latest = [], {}
    for i in range(n):
        k = f"k{rng.randrange(40)}"
        ts = (T0 + timedelta(minutes=i % 120)).isoformat().replace("+00:00", "Z")
        records.append((k.encode(), json.dumps({"id": k, "amount": i, "ts": ts}).encode(), True))
        latest[k] = i
    produce(bootstrap, topic, records)
    return latest


def resource(tmp_path, warehouse_url: str, bootstrap: str) -> FlowsuiteResource:
    return FlowsuiteResource(
        kafka_bootstrap=bootstrap, lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'meta.db'}", warehouse_url=warehouse_url,
    )


def assets_of(spec: DataProductSpec) -> list:
    defs = dg.Definitions.merge(build_landing_definitions(spec), build_warehouse_definitions(spec))
    return list(defs.assets or [])


def test_warehouse_asset_syncs_what_landed(kafka_bootstrap, topic, tmp_path, sqlite_url):
    spec = spec_for(topic, "wh_ok", max_amount=1_000_000)
    latest = produce_some(kafka_bootstrap, topic, 500)
    result = dg.materialize(assets_of(spec), resources={"flowsuite": resource(tmp_path, sqlite_url, kafka_bootstrap)})
    assert result.success
    mats = result.asset_materializations_for_node("wh_ok__warehouse")
    meta = {k: getattr(v, "value", v) for k, v in mats[-1].metadata.items()}
    assert meta["rows_inserted"] == len(latest) and meta["rows_read"] == 500
    assert meta["dagster/row_count"] == len(latest) and meta["dagster/table_name"] == "wh_ok"
    assert sum(meta["offsets_after"].values()) == 500
    sink = WarehouseSink(spec, sqlite_url)
    assert {r["id"]: r["amount"] for r in sink.read_rows()} == latest
    sink.dispose()


def test_a_failing_blocking_check_on_landed_stops_the_warehouse(kafka_bootstrap, topic, tmp_path, sqlite_url):
    spec = spec_for(topic, "wh_blocked", max_amount=10)  # amounts go to 299: the expectation fails
    produce_some(kafka_bootstrap, topic, 300)
    result = dg.materialize(
        assets_of(spec), resources={"flowsuite": resource(tmp_path, sqlite_url, kafka_bootstrap)}, raise_on_error=False
    )
    checks = result.get_asset_check_evaluations()
    assert any(not c.passed and c.asset_key == dg.AssetKey(["wh_blocked", "landed"]) for c in checks)
    assert result.asset_materializations_for_node("wh_blocked__landed")  # landed did land
    assert not result.asset_materializations_for_node("wh_blocked__warehouse")
    sink = WarehouseSink(spec, sqlite_url)
    sink.ensure_table()
    assert sink.row_count() == 0
    sink.dispose()


def test_definition_surface():
    spec = spec_for("t", "wh_def", 10)
    (asset,) = build_warehouse_definitions(spec).assets
    assert asset.key == warehouse_key(spec) == dg.AssetKey(["wh_def", "warehouse"])
    assert dg.AssetKey(["wh_def", "landed"]) in asset.asset_deps[asset.key]
    assert asset.group_names_by_key[asset.key] == "wh_def"
    assert warehouse_kind("postgresql+psycopg://u:p@h/db") == "postgres"
    assert warehouse_kind("mysql+pymysql://u@h/db") == "mysql"
    assert warehouse_kind("sqlite:///x.db") == "sqlite"
