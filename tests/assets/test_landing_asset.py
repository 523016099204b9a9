"""The `P/landed` asset through Dagster: materialize it and read the figures it reports."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets.landing import build_landing_definitions, landed_key
from connectors.spec import parse_spec_file
from examples.demo_data import generate_clicks, produce
from orchestration.resources import FlowsuiteResource

REPO = Path(__file__).resolve().parents[2]


def test_materialize_landed_reports_the_figures(kafka_bootstrap, topic, tmp_path):
    report = produce(kafka_bootstrap, topic, generate_clicks(1500, 2, 0.02, seed=3), partitions=2)
    spec = parse_spec_file(REPO / "dataproducts" / "clicks.yaml").model_copy(update={"topic": topic})
    landed = build_landing_definitions(spec).assets[0]
    flowsuite = FlowsuiteResource(
        kafka_bootstrap=kafka_bootstrap,
        lake_url=str(tmp_path / "lake"),
        metastore_url=f"sqlite:///{tmp_path / 'metastore.db'}",
        warehouse_url=f"sqlite:///{tmp_path / 'warehouse.db'}",
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize([landed], resources={"flowsuite": flowsuite}, instance=instance)
        assert result.success
        md = {k: getattr(v, "value", v) for k, v in result.asset_materializations_for_node("clicks__landed")[0].metadata.items()}
        assert md["records_consumed"] == 1500
        assert md["records_consumed"] == md["records_landed"] + md["records_quarantined"]
        assert md["records_quarantined"] == report.invalid
        assert md["files"] >= 1 and md["bytes"] > 0
        ranges = md["offset_ranges"]
        assert {int(p): (r["start"], r["end"], r["reached_eof"]) for p, r in ranges.items()} == {
            p: (0, n, True) for p, n in report.per_partition.items()
        }
        assert md["lag_after_run"] == 0
        assert md["hours_touched"] and "| hour | rows | files |" in md["hours"]

        # Nothing new: a second materialization lands nothing and says so in its figures.
        again = dg.materialize([landed], resources={"flowsuite": flowsuite}, instance=instance)
        md2 = again.asset_materializations_for_node("clicks__landed")[0].metadata
        assert md2["records_consumed"].value == 0

        # Partitions and cap from run config.
        produce(kafka_bootstrap, topic, generate_clicks(400, 1, 0.0, seed=4), partitions=2)
        capped = dg.materialize(
            [landed], resources={"flowsuite": flowsuite}, instance=instance,
            run_config={"ops": {"clicks__landed": {"config": {"partitions": [0], "max_records": 10}}}},
        )
        ranges = capped.asset_materializations_for_node("clicks__landed")[0].metadata["offset_ranges"].value
        assert list(ranges) == ["0"] and ranges["0"]["records"] == 10 and not ranges["0"]["reached_eof"]


def test_landed_asset_definition(tmp_path):
    spec = parse_spec_file(REPO / "dataproducts" / "clicks.yaml")
    asset = build_landing_definitions(spec).assets[0]
    key = landed_key(spec)
    assert key.to_user_string() == "clicks/landed"
    assert asset.group_names_by_key[key] == "clicks"
    assert asset.specs_by_key[key].owners == ["team:ads"]
    assert {"kafka", "parquet"} <= set(asset.specs_by_key[key].kinds)
    assert "flowsuite" in asset.required_resource_keys
