"""`flowsuite table clicks` (snapshots and rows through the Iceberg table), `table publish`, and
the publish lag in `flowsuite status`, on a real landing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.flows import compact_hour
from connectors.settings import load_settings
from orchestration.cli import main
from orchestration.cli.root import cli
from orchestration.resources import default_flowsuite_resource
from orchestration.services.status import collect_status
from tests.support.compaction import HOURS, LATER, hour_rows, land_in_rounds
from tests.support.runs import run_at

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sealed_clicks(flowsuite_home, topic, kafka_bootstrap, monkeypatch, tmp_path):
    products = tmp_path / "products"
    products.mkdir()
    text = (REPO / "dataproducts" / "clicks.yaml").read_text()
    (products / "clicks.yaml").write_text(re.sub(r"(?m)^topic: .*$", f"topic: {topic}", text))
    monkeypatch.setenv("FLOWSUITE_PRODUCTS_DIR", str(products))
    monkeypatch.setenv("FLOWSUITE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    from connectors.spec import load_specs

    spec = load_specs(products)[0]
    flowsuite = default_flowsuite_resource()
    lake, metastore = flowsuite.lake(), flowsuite.metastore()
    land_in_rounds(spec, kafka_bootstrap, lake, metastore, rounds=1, per_round=500)
    for h in HOURS:
        compact_hour(spec, h, run_at(lake=lake, metastore=metastore, now=LATER))
    return spec, lake, metastore


def test_table_publish_show_and_status_lag(sealed_clicks, capsys):
    spec, lake, metastore = sealed_clicks
    runner = CliRunner()
    missing = runner.invoke(cli, ["table", "clicks"], obj=load_settings())
    assert missing.exit_code == 1 and "does not exist yet" in missing.output

    (st,) = collect_status(load_settings())
    assert st.iceberg == "table flowsuite.clicks: publish lag 3 h (3 sealed hour(s) not published yet)"

    out = runner.invoke(cli, ["table", "publish", "clicks"], obj=load_settings())
    assert out.exit_code == 0, out.output
    assert f"published {HOURS[0]} g1, {HOURS[1]} g1, {HOURS[2]} g1; publish sequence 3" in out.output

    shown = runner.invoke(cli, ["table", "clicks", "--rows", "5", "--hour", HOURS[1]], obj=load_settings())
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert sum(1 for line in lines if re.match(r"\s*\d+\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+append\s+2026-01-10-1\d", line)) == 3
    n = hour_rows(lake, metastore, spec.name, HOURS[1]).num_rows
    assert f"{n:,} row(s) through the table in {HOURS[1]}; the first 5:" in shown.output

    assert main(["table", "clicks", "--rows", "0"]) == 0  # through the flowsuite entry point
    assert "current snapshot" in capsys.readouterr().out
    assert main(["status"]) == 0
    assert "iceberg        table flowsuite.clicks: publish lag 0 h (up to date)" in capsys.readouterr().out


def test_a_product_without_a_table_says_so(flowsuite_home):
    out = CliRunner().invoke(cli, ["table", "show", "partners"], obj=load_settings())
    assert out.exit_code == 1 and "partners publishes no Iceberg table" in out.output
