"""`flowsuite status`: offsets, lag, hours, quarantine and warehouse rows of a real landing,
with the broker up and with it unreachable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from connectors.flows import land
from connectors.settings import load_settings
from connectors.warehouse import sync
from examples.demo_data import generate_clicks, produce
from orchestration.cli import main
from orchestration.resources import default_flowsuite_resource
from orchestration.services.broker import free_port
from orchestration.services.status import collect_status

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clicks_on_topic(flowsuite_home, topic, kafka_bootstrap, monkeypatch, tmp_path):
    """The clicks spec reading a fresh topic, in a products dir of its own."""
    products = tmp_path / "products"
    products.mkdir()
    text = (REPO / "dataproducts" / "clicks.yaml").read_text()
    (products / "clicks.yaml").write_text(re.sub(r"(?m)^topic: .*$", f"topic: {topic}", text))
    monkeypatch.setenv("FLOWSUITE_PRODUCTS_DIR", str(products))
    monkeypatch.setenv("FLOWSUITE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    from connectors.spec import load_specs

    return load_specs(products)[0]


def test_status_after_landing_shows_offsets_lag_hours_quarantine_and_warehouse(
    clicks_on_topic, kafka_bootstrap, capsys
):
    spec = clicks_on_topic
    flowsuite = default_flowsuite_resource()
    lake, metastore = flowsuite.lake(), flowsuite.metastore()
    produce(kafka_bootstrap, spec.topic, generate_clicks(2_000, 3, 0.05, seed=3), partitions=2)
    result = land(
        spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, run_id="status-test"
    )
    assert result.consumed == 2_000 and result.quarantined > 0

    (before,) = collect_status(load_settings())
    assert before.broker == "ok"
    assert [p.committed for p in before.partitions] == [p.end for p in before.partitions]
    assert sum(p.committed for p in before.partitions) == 2_000
    assert before.lag == 0 and all(p.end_exact for p in before.partitions)
    assert before.landed_rows == result.landed and before.quarantined == result.quarantined
    assert before.hours.open == len(result.hours) and before.hours.compacted == 0
    assert before.hours.latest_open == max(result.hours)
    assert before.last_landing_at is not None
    assert before.warehouse_rows is None and before.warehouse.startswith("not created yet")

    # More traffic waits in the topic, and the warehouse catches up with the lake.
    produce(kafka_bootstrap, spec.topic, generate_clicks(300, 1, 0.0, seed=4), partitions=2)
    sync(spec, lake=lake, metastore=metastore, url=flowsuite.warehouse_url)

    assert main(["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (after,) = doc["products"]
    assert after["lag"] == 300
    assert sum(p["end"] - p["committed"] for p in after["partitions"]) == 300
    assert after["warehouse"] == "ok" and after["warehouse_rows"] == result.landed
    assert [p["warehouse"] for p in after["partitions"]] == [
        p["committed"] for p in after["partitions"]
    ]

    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"lag\s+300 record\(s\) waiting", text), text
    assert f"table clicks: {result.landed:,} rows" in text
    assert f"quarantined    {result.quarantined:,} record(s)" in text


def test_status_with_the_broker_down_shows_what_it_can(
    clicks_on_topic, kafka_bootstrap, monkeypatch, capsys
):
    spec = clicks_on_topic
    flowsuite = default_flowsuite_resource()
    produce(kafka_bootstrap, spec.topic, generate_clicks(500, 2, 0.0, seed=5), partitions=2)
    land(
        spec,
        lake=flowsuite.lake(),
        metastore=flowsuite.metastore(),
        bootstrap=kafka_bootstrap,
        run_id="r1",
    )

    down = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("FLOWSUITE_KAFKA_BOOTSTRAP", down)
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert f"broker: no broker answers at {down}" in text
    assert re.search(r"lag\s+\? record\(s\)", text)
    # The metastore's side is still there: committed offsets, rows, hours.
    assert "500 rows in" in text and "never landed" not in text
    assert main(["status", "--json"]) == 0
    (st,) = json.loads(capsys.readouterr().out)["products"]
    assert st["broker"].startswith("no broker answers")
    assert sum(p["committed"] for p in st["partitions"]) == 500
    assert all(p["end"] is None and p["lag"] is None for p in st["partitions"])


def test_status_of_an_unknown_product_is_a_one_line_error(clicks_on_topic, capsys):
    assert main(["status", "nope"]) == 1
    err = capsys.readouterr().err
    assert "no data product 'nope'" in err and "known: clicks" in err
