"""Avro decimals land as plain positional text with the writer's scale — never the exponent
form Python's str(Decimal) gives for small or zero values (`1.5E-7`, `0E-9`) — through the
decoder, the real broker, the lake and the warehouse."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from connectors.flows import land
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.warehouse import WarehouseSink, sync
from examples.demo_data import produce
from tests.support.avro import avro_spec, batch, wire, write_schemas

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
