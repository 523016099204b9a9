"""The code location loads with every product in dataproducts/, and bad specs fail loudly."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from connectors.spec import SpecError, load_specs
from orchestration.definitions import defs

REPO = Path(__file__).resolve().parents[2]


def test_definitions_load_every_product(flowsuite_home):
    definitions = defs()
    assert isinstance(definitions, dg.Definitions)
    graph = definitions.resolve_asset_graph()
    specs = load_specs(REPO / "dataproducts")
    assert specs
    for spec in specs:
        key = dg.AssetKey([spec.name, "landed"])
        node = graph.get(key)
        assert node.group_name == spec.name
        assert node.owners == [spec.owner]
        assert {"kafka", "parquet"} <= set(node.kinds)
        sensor = definitions.resolve_sensor_def(f"{spec.name}_offsets")
        assert sensor.job_name == f"{spec.name}_ingest"
        job = definitions.resolve_job_def(f"{spec.name}_ingest")
        assert job.tags["flowsuite/product"] == spec.name
        assert key in job.asset_layer.executable_asset_keys
    assert "flowsuite" in definitions.resources


def test_bad_specs_name_every_file(flowsuite_home, tmp_path, monkeypatch):
    bad = tmp_path / "products"
    bad.mkdir()
    (bad / "orders.yaml").write_text("name: orders\nowner: nobody\ntopic: orders\nfields: []\n")
    (bad / "payments.yaml").write_text("name: payments\nowner: team:pay\ntopic: 'bad topic!'\n")
    monkeypatch.setenv("FLOWSUITE_PRODUCTS_DIR", str(bad))
    with pytest.raises(SpecError) as raised:
        defs()
    message = str(raised.value)
    assert "orders.yaml" in message and "payments.yaml" in message
    assert "owner" in message and "topic" in message


def test_lineage_runs_from_the_legacy_table_through_the_topic_to_the_warehouse(flowsuite_home):
    """partners: legacy/partners → partners/published → partners/landed → partners/warehouse,
    one unbroken path in the asset graph; a product nobody publishes to has no parent."""
    graph = defs().resolve_asset_graph()
    from connectors.sources import load_sources

    (source,) = [s for s in load_sources(REPO / "dataproducts") if s.product == "partners"]
    chain = [
        dg.AssetKey(["legacy", source.table]),
        dg.AssetKey(["partners", "published"]),
        dg.AssetKey(["partners", "landed"]),
        dg.AssetKey(["partners", "warehouse"]),
    ]
    for parent, child in zip(chain, chain[1:], strict=False):
        assert parent in graph.get(child).parent_keys, f"{parent} -> {child} missing"
    assert not graph.get(dg.AssetKey(["clicks", "landed"])).parent_keys
