"""Avro decimals land as plain positional text with the writer's scale — never the exponent
form Python's str(Decimal) gives for small or zero values (`1.5E-7`, `0E-9`) — through the
decoder, the real broker, the lake and the warehouse."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from connectors.flows import land
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.warehouse import WarehouseSink, sync
from examples.demo_data import produce
from tests.support.avro import avro_spec, batch, wire, write_schemas
from tests.support.runs import run_at

TS = datetime(2026, 11, 30, 10, 15, tzinfo=UTC)
MONEY = {
    "type": "record", "name": "Payment", "namespace": "flowsuite.test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 4}},
        {"name": "rate", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 9}],
         "default": None},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    ],
}
FIELDS = [{"name": "id", "type": "int64", "required": True}, {"name": "amount", "type": "string"},
          {"name": "rate", "type": "string"}, {"name": "event_time", "type": "timestamp"}]
# (amount, rate): values whose str() is exponent notation, and the plain text each must land as
CASES = [
    (Decimal("0.0000"), "0.0000", Decimal("0E-9"), "0.000000000"),
    (Decimal("0.0001"), "0.0001", Decimal("1.5E-7"), "0.000000150"),
    (Decimal("1000.0000"), "1000.0000", Decimal("0.000000001"), "0.000000001"),
    (Decimal("-0.0005"), "-0.0005", None, None),
    (Decimal("12345678901234.5678"), "12345678901234.5678", Decimal("-1E-9"), "-0.000000001"),
]


def _records() -> list[dict]:
    return [{"id": i, "amount": a, "rate": r, "event_time": TS} for i, (a, _, r, _) in enumerate(CASES)]


def test_the_exponent_forms_differ_from_the_plain_text():
    assert str(Decimal("0E-9")) == "0E-9" and str(Decimal("1.5E-7").quantize(Decimal("1E-9"))) == "1.50E-7"
    assert str(Decimal("0.0000")) == "0.0000"  # not every str() is wrong: the cases include both


def test_decoder_lands_plain_positional_text(tmp_path):
    spec = avro_spec("payments", write_schemas(tmp_path, {3: MONEY}), FIELDS)
    from connectors.formats import decoder_for

    decoded = decoder_for(spec).decode(batch([wire(3, MONEY, r) for r in _records()]))
    assert decoded.invalid.num_rows == 0, decoded.invalid.to_pylist()
    rows = decoded.valid.to_pylist()
    assert [(r["amount"], r["rate"]) for r in rows] == [(a, r) for _, a, _, r in CASES]
    assert all("E" not in (r["rate"] or "") + r["amount"] for r in rows)
    for row, (a, _, r, _) in zip(rows, CASES, strict=True):  # still exact
        assert Decimal(row["amount"]) == a and (row["rate"] is None) == (r is None)
        assert r is None or Decimal(row["rate"]) == r


def test_through_the_broker_into_the_lake_and_the_warehouse(tmp_path, make_topic, kafka_bootstrap):
    topic = make_topic(1)
    spec = avro_spec(topic, write_schemas(tmp_path / "schemas", {3: MONEY}), FIELDS,
                     name="payments", key=["id"], sinks={"database": {"table": "payments"}})
    records = [(str(r["id"]).encode(), wire(3, MONEY, r), True) for r in _records()] * 200  # 1,000 records
    produce(kafka_bootstrap, topic, records, partitions=1)
    lake, ms = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'ms.db'}")
    result = land(spec, lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert (result.consumed, result.landed, result.quarantined) == (1000, 1000, 0)
    rows = lake.read_tables([f.path for f in ms.live_files(spec.name)]).to_pylist()
    want = [(a, r) for _, a, _, r in CASES]
    assert sorted({(r["amount"], r["rate"]) for r in rows}, key=str) == sorted(want, key=str)

    url = f"sqlite:///{tmp_path / 'wh.db'}"
    sync(spec, lake=lake, metastore=ms, url=url)
    sink = WarehouseSink(spec, url)
    with sink.engine.connect() as conn:
        import sqlalchemy as sa

        got = conn.execute(sa.text("SELECT id, amount, rate FROM payments ORDER BY id")).fetchall()
    assert [(a, r) for _, a, r in got] == want


# --- `type: decimal`: a real decimal column in the lake, the warehouse and Iceberg ------------

DECIMAL_FIELDS = [{"name": "id", "type": "int64", "required": True},
                  {"name": "amount", "type": "decimal", "precision": 18, "scale": 4},
                  {"name": "rate", "type": "decimal", "precision": 20, "scale": 9},
                  {"name": "event_time", "type": "timestamp"}]


def test_decimal_fields_are_checked_with_file_and_field(tmp_path):
    import yaml

    from connectors.spec import SpecError, parse_spec_file

    def problems(field: dict) -> str:
        doc = {"name": "money", "owner": "team:x", "topic": "money", "format": "json",
               "fields": [{"name": "id", "type": "int64"}, field]}
        path = tmp_path / "money.yaml"
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(SpecError) as exc:
            parse_spec_file(path)
        return str(exc.value)

    assert "money.yaml at fields[1](amount)" in problems({"name": "amount", "type": "decimal"})
    assert "needs precision" in problems({"name": "amount", "type": "decimal"})
    assert "precision must be 1 to 38" in problems({"name": "amount", "type": "decimal", "precision": 39})
    assert "precision must be 1 to 38" in problems({"name": "amount", "type": "decimal", "precision": 0})
    assert "scale must be 0 to the precision (4)" in problems({"name": "amount", "type": "decimal", "precision": 4,
                                                                "scale": 5})
    assert "scale must be 0 to the precision" in problems({"name": "amount", "type": "decimal", "precision": 4,
                                                            "scale": -1})
    assert "apply to type decimal" in problems({"name": "amount", "type": "float64", "scale": 2})


def test_json_decimals_exact_from_strings_and_numbers(tmp_path):
    import json

    from connectors.formats import decoder_for
    from connectors.spec import DataProductSpec

    spec = DataProductSpec.model_validate({
        "name": "money", "owner": "team:x", "topic": "money", "format": "json",
        "fields": [{"name": "id", "type": "int64"}, {"name": "rate", "type": "decimal", "precision": 20, "scale": 9}],
        "event_time": {"source": "kafka_timestamp"}, "partitioning": {"start": "2026-01-01T00:00:00Z"}})
    values = ["0E-9", "1.5E-7", 1e-7, "12345678901.000000001", 3, "1E+3"]
    good = [json.dumps({"id": i, "rate": v}).encode() for i, v in enumerate(values)]
    bad = [json.dumps({"id": 90, "rate": "0.0000000001"}).encode(),  # 10 digits after the point
           json.dumps({"id": 91, "rate": "1E+12"}).encode(),          # 13 + 9 digits > 20
           json.dumps({"id": 92, "rate": "NaN"}).encode(), json.dumps({"id": 93, "rate": True}).encode()]
    decoded = decoder_for(spec).decode(batch(good + bad))
    assert decoded.valid.schema.field("rate").type == __import__("pyarrow").decimal128(20, 9)
    got = [format(v, "f") for v in decoded.valid.column("rate").to_pylist()]
    assert got == ["0.000000000", "0.000000150", "0.000000100", "12345678901.000000001", "3.000000000",
                   "1000.000000000"]
    assert decoded.invalid.num_rows == 4
    reasons = " | ".join(decoded.invalid.column("_error").to_pylist())
    assert "does not fit decimal(20,9)" in reasons and "not a finite decimal" in reasons


def _decimal_cases_want() -> list[tuple[Decimal, Decimal | None]]:
    return [(a, r) for a, _, r, _ in CASES]


@pytest.mark.parametrize("db", ["sqlite", "postgresql", "mariadb"])
def test_decimal_type_through_broker_lake_warehouse_and_iceberg(db, request, tmp_path, make_topic, kafka_bootstrap):
    import pyarrow as pa
    import sqlalchemy as sa

    from connectors.flows import compact_hour
    from connectors.lake import hour_key
    from connectors.tables import IcebergTables, catalog_url, publish_sealed_hours

    url = {"sqlite": lambda: f"sqlite:///{tmp_path / 'wh.db'}", "postgresql": lambda: request.getfixturevalue("pg_fresh_url"),
           "mariadb": lambda: request.getfixturevalue("mariadb_url")}[db]()
    topic = make_topic(1)
    table = f"payments_{db}_{topic[-8:]}".replace("-", "_").lower()
    spec = avro_spec(topic, write_schemas(tmp_path / "schemas", {3: MONEY}), DECIMAL_FIELDS,
                     name="payments", key=["id"], sinks={"database": {"table": table}})
    produce(kafka_bootstrap, topic, [(str(r["id"]).encode(), wire(3, MONEY, r), True) for r in _records()], partitions=1)
    lake, ms = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'ms.db'}")
    result = land(spec, lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert (result.landed, result.quarantined) == (len(CASES), 0)
    landed = lake.read_tables([f.path for f in ms.live_files(spec.name)])
    assert landed.schema.field("amount").type == pa.decimal128(18, 4)
    assert landed.schema.field("rate").type == pa.decimal128(20, 9)
    assert sorted(zip(landed.column("amount").to_pylist(), landed.column("rate").to_pylist(), strict=True),
                  key=str) == sorted(_decimal_cases_want(), key=str)

    sync(spec, lake=lake, metastore=ms, url=url)
    sink = WarehouseSink(spec, url)
    with sink.engine.connect() as conn:
        got = conn.execute(sa.text(f"SELECT id, amount, rate FROM {table} ORDER BY id")).fetchall()
        cols = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns(table)}
    if db == "sqlite":  # no exact decimal type: plain text
        assert isinstance(cols["amount"], sa.Text | sa.String)
        assert [(a, r) for _, a, r in got] == [(a, r) for _, a, _, r in CASES]
    else:
        assert (cols["amount"].precision, cols["amount"].scale) == (18, 4)
        assert (cols["rate"].precision, cols["rate"].scale) == (20, 9)
        assert [(a, r) for _, a, r in got] == _decimal_cases_want()
        assert [format(a, "f") for _, a, _ in got] == [a for _, a, _, _ in CASES]
    sink.engine.dispose()

    if db != "sqlite":
        return  # the Iceberg table does not depend on the warehouse
    compact_hour(spec, hour_key(TS), run_at(lake=lake, metastore=ms))
    tables = IcebergTables(catalog_url(f"sqlite:///{tmp_path / 'ms.db'}"), lake)
    publish_sealed_hours(spec, lake=lake, metastore=ms, tables=tables)
    iceberg = tables.catalog.load_table(f"flowsuite.{spec.name}")
    assert str(iceberg.schema().find_field("amount").field_type) == "decimal(18, 4)"
    assert str(iceberg.schema().find_field("rate").field_type) == "decimal(20, 9)"
    rows = iceberg.scan(selected_fields=("amount", "rate")).to_arrow()
    assert sorted(zip(rows.column("amount").to_pylist(), rows.column("rate").to_pylist(), strict=True),
                  key=str) == sorted(_decimal_cases_want(), key=str)
    tables.dispose()
