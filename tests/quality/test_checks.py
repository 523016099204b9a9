"""Landing checks in Dagster: one per expectation, severities, blocking the ingest job, freshness, volume."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml
from confluent_kafka import Producer
from sqlalchemy import insert

from connectors.flows import land
from connectors.lake import Lake, hour_key
from connectors.metastore import Metastore
from connectors.metastore import hours as hours_table
from connectors.settings import REPO_ROOT
from connectors.spec import DataProductSpec
from orchestration.cli import main
from orchestration.resources import FlowsuiteResource
from quality.checks import RECORDS_ACCOUNTED, build_quality_definitions, landing_check_specs
from quality.expectations import load_checked_specs
from quality.freshness import FRESHNESS, VOLUME, freshness_status, volume_status

CLICKS = yaml.safe_load((REPO_ROOT / "dataproducts" / "clicks.yaml").read_text())

COST_AT_MOST_100 = {"type": "expect_column_values_to_be_between",
                    "kwargs": {"column": "cost_micros", "min_value": 0, "max_value": 100}}
FEW_USERS = {"type": "expect_column_proportion_of_unique_values_to_be_between",
             "kwargs": {"column": "user_id", "min_value": 0.9}, "severity": "warn", "name": "user_diversity"}


def spec_for(topic: str, name: str, expectations: list[dict], **quality) -> DataProductSpec:
    data = copy.deepcopy(CLICKS)
    data.update(name=name, topic=topic,
                quality={"on_invalid": "quarantine", "expectations": expectations, **quality})
    return DataProductSpec.model_validate(data)


def produce_clicks(bootstrap: str, topic: str, n: int, cost: int = 1500) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for i in range(n):
        p.produce(topic, key=f"e-{i}".encode(), partition=0, value=json.dumps({
            "event_id": f"e-{i}", "user_id": "same-user", "partner_id": "p-001", "ad_id": "a",
            "kind": "click", "cost_micros": cost, "event_time": datetime.now(UTC).isoformat()}).encode())
    assert p.flush(30) == 0


def test_one_check_per_expectation_blocking_by_severity():
    clicks = next(s for s in load_checked_specs(REPO_ROOT / "dataproducts")
                  if s.name == "clicks")
    specs = {s.name: s for s in landing_check_specs(clicks)}
    assert specs["values_match_regex__partner_id"].blocking is True
    assert specs["user_id_diversity"].blocking is False
    assert specs["mean_between__cost_micros"].blocking is False  # warn in the suite file
    assert specs["values_unique__event_id"].blocking is True
    assert specs[RECORDS_ACCOUNTED].blocking is True
    assert all(s.asset_key == dg.AssetKey(["clicks", "landed"]) for s in specs.values())
    assert "partner_id" in specs["values_match_regex__partner_id"].description
    quality = build_quality_definitions(clicks)
    names = {key.name for c in quality.asset_checks for key in c.check_keys}
    assert names == {FRESHNESS, VOLUME}
    assert [s.name for s in quality.schedules] == ["clicks_quality_schedule"]


def _ingest(spec: DataProductSpec, tmp_path: Path, bootstrap: str):
    from assets.factory import product_definitions

    resource = FlowsuiteResource(
        kafka_bootstrap=bootstrap, lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'm.db'}", warehouse_url=f"sqlite:///{tmp_path / 'w.db'}",
    )
    defs = dg.Definitions.merge(product_definitions(spec), build_quality_definitions(spec),
                                dg.Definitions(resources={"flowsuite": resource}))
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def(f"{spec.name}_ingest").execute_in_process(instance=instance, raise_on_error=False)
        materialized = {tuple(e.asset_key.path) for e in result.get_asset_materialization_events()}
        evaluations = {e.event_specific_data.check_name: e.event_specific_data
                       for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    return result, materialized, evaluations, resource.metastore()


def test_failing_error_check_stops_the_warehouse_and_blocks_the_hours(kafka_bootstrap, make_topic, tmp_path, capsys,
                                                                      monkeypatch):
    topic = make_topic(partitions=1)
    spec = spec_for(topic, "gate", [COST_AT_MOST_100, FEW_USERS])
    produce_clicks(kafka_bootstrap, topic, 20, cost=1500)
    result, materialized, evaluations, metastore = _ingest(spec, tmp_path, kafka_bootstrap)

    assert not result.success
    assert ("gate", "landed") in materialized  # the landing itself committed
    assert ("gate", "warehouse") not in materialized  # the blocking check stopped what follows
    failed = evaluations["values_between__cost_micros"]
    assert failed.passed is False and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["unexpected_count"].value == 20
    assert failed.metadata["unexpected_percent"].value == 100.0
    assert 1500 in failed.metadata["unexpected_values"].value
    assert result.run_id in failed.metadata["blocked_reason"].value
    warn = evaluations["user_diversity"]
    assert warn.passed is False and warn.severity == dg.AssetCheckSeverity.WARN
    assert evaluations[RECORDS_ACCOUNTED].passed is True

    blocked = {h.hour: h.blocked_reason for h in metastore.hours("gate") if h.blocked_reason}
    assert blocked and all("values_between__cost_micros" in r and result.run_id in r for r in blocked.values())
    assert all("user_diversity" not in r for r in blocked.values())  # warn never blocks

    products = tmp_path / "products"
    products.mkdir()
    data = copy.deepcopy(CLICKS)
    data.update(name="gate", topic=topic, quality={"expectations": [COST_AT_MOST_100]})
    (products / "gate.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("FLOWSUITE_PRODUCTS_DIR", str(products))
    monkeypatch.setenv("FLOWSUITE_METASTORE_URL", metastore.url)
    monkeypatch.setenv("FLOWSUITE_LAKE_URL", str(tmp_path / "lake"))
    assert main(["quality", "blocked", "gate", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(blocked)
    assert main(["quality", "unblock", "gate", "--hour", next(iter(blocked))]) == 0
    assert "unblocked 1 hour(s)" in capsys.readouterr().out
    assert not [h for h in metastore.hours("gate") if h.blocked_reason]


def test_warn_only_failures_let_the_warehouse_run(kafka_bootstrap, make_topic, tmp_path):
    topic = make_topic(partitions=1)
    spec = spec_for(topic, "warnonly", [FEW_USERS])
    produce_clicks(kafka_bootstrap, topic, 20)
    result, materialized, evaluations, metastore = _ingest(spec, tmp_path, kafka_bootstrap)
    assert result.success
    assert {("warnonly", "landed"), ("warnonly", "warehouse")} <= materialized
    assert evaluations["user_diversity"].passed is False
    assert not [h for h in metastore.hours("warnonly") if h.blocked_reason]


def test_freshness_max_age_and_max_lag(kafka_bootstrap, make_topic, tmp_path):
    topic = make_topic(partitions=1)
    spec = spec_for(topic, "fresh", [], freshness={"max_age": "1h", "max_lag": 10})
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'm.db'}")
    produce_clicks(kafka_bootstrap, topic, 25)
    stale = freshness_status(spec, metastore, kafka_bootstrap)
    assert not stale.passed and "never landed" in stale.description and "25 records wait" in stale.description
    land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=10)
    fresh = freshness_status(spec, metastore, kafka_bootstrap)
    assert fresh.passed, fresh.description
    assert fresh.metadata["lag"] == 0
    later = freshness_status(spec, metastore, kafka_bootstrap, now=time.time() + 2 * 3600)
    assert not later.passed and "above max_age" in later.description


def test_volume_of_the_latest_closed_hour_against_the_trailing_median(tmp_path):
    spec = spec_for("t", "vol", [], volume={"trailing_hours": 4, "min_ratio": 0.5, "max_ratio": 2.0})
    metastore = Metastore(f"sqlite:///{tmp_path / 'm.db'}")
    now = datetime(2026, 11, 26, 12, 30, tzinfo=UTC)  # latest closed hour: 11:00 (lateness 10m)

    def set_rows(rows_by_hours_ago: dict[int, int]) -> None:
        with metastore.engine.begin() as conn:
            conn.execute(hours_table.delete())
            for ago, rows in rows_by_hours_ago.items():
                hour = hour_key(datetime(2026, 11, 26, 11, tzinfo=UTC) - timedelta(hours=ago))
                conn.execute(insert(hours_table).values(product="vol", hour=hour, state="open", generation=0,
                                                        landed_rows=rows, quarantined_rows=0))

    set_rows({0: 100, 1: 100, 2: 90, 3: 110, 4: 100})
    ok = volume_status(spec, metastore, now)
    assert ok.passed and ok.metadata["hour"] == "2026-11-26-11" and ok.metadata["ratio"] == 1.0
    set_rows({0: 10, 1: 100, 2: 90, 3: 110, 4: 100})
    low = volume_status(spec, metastore, now)
    assert not low.passed and "min_ratio" in low.description
    set_rows({0: 1000, 1: 100, 2: 90, 3: 110, 4: 100})
    assert not volume_status(spec, metastore, now).passed
    set_rows({1: 100, 2: 90, 3: 110, 4: 100})  # nothing landed in the latest closed hour
    assert not volume_status(spec, metastore, now).passed


@pytest.mark.parametrize("severity,blocks", [("error", True), ("warn", False)])
def test_each_severity_on_a_landed_batch(tmp_path, severity, blocks):
    import pyarrow as pa

    from connectors.flows import LandingResult, PartitionLanding
    from quality.checks import landing_check_results

    spec = spec_for("t", "sev", [{**COST_AT_MOST_100, "severity": severity}])
    table = pa.table({"cost_micros": pa.array([5, 500, 7000], pa.int64()), "event_id": ["a", "b", "c"]})
    result = LandingResult("sev", "t", "run-1", {0: PartitionLanding(0, 0, 3, consumed=3, landed=3)}, [], 0.1)
    check = next(r for r in landing_check_results(spec, table, result, None)
                 if r.check_name == "values_between__cost_micros")
    assert check.passed is False
    assert check.severity == (dg.AssetCheckSeverity.ERROR if blocks else dg.AssetCheckSeverity.WARN)
    assert check.metadata["unexpected_count"].value == 2
    assert ("blocked_reason" in check.metadata) is blocks
