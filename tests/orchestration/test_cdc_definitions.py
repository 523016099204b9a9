"""The orders CDC source in the code location, the `flowsuite cdc` click group against a real
logical PostgreSQL, `flowsuite status` showing the slot, and the retained-WAL check."""

from __future__ import annotations

import json

import dagster as dg
from click.testing import CliRunner

from assets.cdc import RETAINED_WAL_CHECK, retained_wal_result
from connectors.settings import load_settings
from connectors.sources.cdc.spec import CdcSourceSpec
from orchestration.cli import cli
from orchestration.definitions import defs
from tests.support.cdc import ORDERS_DDL, sql


def test_orders_lineage_job_sensor_and_check(flowsuite_home):
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    chain = [dg.AssetKey(["legacy", "orders"]), dg.AssetKey(["orders", "published"]),
             dg.AssetKey(["orders", "landed"]), dg.AssetKey(["orders", "warehouse"])]
    for parent, child in zip(chain, chain[1:], strict=False):
        assert parent in graph.get(child).parent_keys, f"{parent} -> {child} missing"
    sensor = definitions.resolve_sensor_def("shop_orders_poll")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED and sensor.job_name == "shop_orders_capture"
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == chain[1]}
    assert RETAINED_WAL_CHECK in checks


def _home(tmp_path, monkeypatch, url):
    monkeypatch.setenv("FLOWSUITE_HOME", str(tmp_path))
    monkeypatch.setenv("FLOWSUITE_CDC_URL", url)


def test_cli_run_status_and_reset(cdc_db, tmp_path, monkeypatch, kafka_bootstrap):
    _home(tmp_path, monkeypatch, cdc_db)
    monkeypatch.setenv("FLOWSUITE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    sql(cdc_db, ORDERS_DDL, "INSERT INTO orders (id, customer) VALUES (1, 'a'), (2, 'b')")
    runner = CliRunner()

    def invoke(args):
        return runner.invoke(cli, ["cdc", *args], obj=load_settings())

    r = invoke(["status"])
    assert r.exit_code == 0 and "slot flowsuite_shop_orders not created yet" in r.output
    r = invoke(["run", "shop_orders"])
    assert r.exit_code == 0, r.output
    assert "snapshot 2 row(s)" in r.output and "REPLICA IDENTITY DEFAULT" in r.output
    sql(cdc_db, "UPDATE orders SET status = 'paid' WHERE id = 1")
    r = invoke(["run", "shop_orders"])
    assert r.exit_code == 0 and "1 transaction(s), 1 event(s)" in r.output
    r = invoke(["status", "shop_orders"])
    assert "snapshot done" in r.output and "retains" in r.output and "lag" in r.output
    from orchestration.cli import main
    assert main(["cdc", "status"]) == 0
    r = invoke(["run", "nope"])
    assert r.exit_code != 0 and "no change-data-capture source 'nope'" in r.output
    r = invoke(["reset", "shop_orders"])
    assert r.exit_code != 0 and "--yes" in r.output
    r = invoke(["reset", "shop_orders", "--yes"])
    assert r.exit_code == 0 and "dropped slot flowsuite_shop_orders" in r.output
    assert sql(cdc_db, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'flowsuite_shop_orders'")[0][0] == 0


def test_flowsuite_status_json_shows_the_slot(cdc_db, tmp_path, monkeypatch, kafka_bootstrap, capsys):
    _home(tmp_path, monkeypatch, cdc_db)
    monkeypatch.setenv("FLOWSUITE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    sql(cdc_db, ORDERS_DDL)
    assert CliRunner().invoke(cli, ["cdc", "run", "shop_orders"], obj=load_settings()).exit_code == 0
    from orchestration.cli import main
    assert main(["status", "orders", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (row,) = doc["cdc"]
    assert row["slot_exists"] and row["retained_wal_bytes"] is not None and row["lag_bytes"] is not None


def test_retained_wal_check_fails_over_the_bound(cdc_db, tmp_path, monkeypatch, kafka_bootstrap):
    _home(tmp_path, monkeypatch, cdc_db)
    monkeypatch.setenv("FLOWSUITE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    sql(cdc_db, ORDERS_DDL, "ALTER TABLE orders ALTER COLUMN note SET STORAGE EXTERNAL")  # no compression
    assert CliRunner().invoke(cli, ["cdc", "run", "shop_orders"], obj=load_settings()).exit_code == 0
    sql(cdc_db, "INSERT INTO orders (id, customer, note) SELECT g, 'x', md5(g::text) || repeat(md5(random()::text), 60) "
             "FROM generate_series(1, 3000) g")
    base = {"name": "shop_orders", "product": "orders", "mode": "cdc", "connection": {"url": cdc_db}, "table": "orders",
            "slot": "flowsuite_shop_orders"}
    tight = retained_wal_result(CdcSourceSpec.model_validate({**base, "max_retained_wal": "1MB"}))
    assert not tight.passed and "bound 1 MB" in tight.description
    loose = retained_wal_result(CdcSourceSpec.model_validate({**base, "max_retained_wal": "1GB"}))
    assert loose.passed


def test_an_unset_variable_in_the_url_is_a_status_row_and_a_terminal_error(tmp_path, monkeypatch, capsys):
    # An unset ${VAR} is configuration, not a server away: `cdc status` shows it in the row,
    # `cdc run` ends with the one line and exit 1 (terminal), not 75 (try again).
    import shutil

    from connectors.settings import REPO_ROOT
    from orchestration.cli import main

    products = tmp_path / "dataproducts"
    shutil.copytree(REPO_ROOT / "dataproducts", products)
    declaration = products / "sources" / "orders.yaml"
    declaration.write_text(declaration.read_text().replace(
        "${FLOWSUITE_CDC_URL:-postgresql://postgres@127.0.0.1:5433/postgres}", "postgresql://cdc:${NOPE_CDC_PASSWORD}@h/db"))
    monkeypatch.setenv("FLOWSUITE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWSUITE_PRODUCTS_DIR", str(products))
    monkeypatch.delenv("NOPE_CDC_PASSWORD", raising=False)
    said = "environment variable NOPE_CDC_PASSWORD is not set (needed by the connection URL of source shop_orders)"
    r = CliRunner().invoke(cli, ["cdc", "status"], obj=load_settings())
    assert r.exit_code == 0 and f"slot unknown: {said}" in r.output, r.output
    capsys.readouterr()
    assert main(["cdc", "run", "shop_orders"]) == 1
    assert capsys.readouterr().err.strip() == f"flowsuite: error: {said}"
