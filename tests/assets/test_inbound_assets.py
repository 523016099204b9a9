"""A product that other organisations push to shows them in its lineage: `<P>/inbound` (an
external asset naming each sender, its origins, sources and rate) is `<P>/landed`'s parent."""

from __future__ import annotations

import dagster as dg

from orchestration.definitions import defs
from orchestration.demo.federation import B_PRODUCTS_DIR


def test_the_sending_organisation_is_in_the_lineage(flowsuite_home, monkeypatch):
    monkeypatch.setenv("FLOWSUITE_PRODUCTS_DIR", str(B_PRODUCTS_DIR))
    graph = defs().resolve_asset_graph()
    landed, inbound = dg.AssetKey(["ads_clicks", "landed"]), dg.AssetKey(["ads_clicks", "inbound"])
    assert graph.get(landed).parent_keys == {inbound}
    node = graph.get(inbound)
    assert not node.is_materializable  # the gateway writes the topic, not Dagster
    assert "pushed by ads" in node.description and "ads.flowsuite.example" in node.description
    assert node.metadata["flowsuite/inbound_senders"] == "ads"
    assert node.metadata["flowsuite/inbound/ads"].data["sources"] == ["/flowsuite/products/clicks"]
    assert "Pushed by ads" in graph.get(landed).description
    text = repr(node.metadata) + node.description
    assert "whsec_" not in text and "FLOWSUITE_INBOUND_ADS_SECRET" not in text  # no secret, not even its variable
    assert dg.AssetKey(["ads_clicks", "warehouse"]) in graph.get_all_asset_keys()  # synced like any product
