"""Every spec type reaches the warehouse unchanged through the sink's staging on every dialect,
awkward values included (quotes, backslashes, NUL bytes, non-ASCII, empty, NULL, microseconds):
MariaDB's staging is SQL text rendered by Arrow (connectors/warehouse/mysql_values.py), so
what it renders must read back as what went in. Also: PostgreSQL tables take the spec's
fillfactor (HOT updates for update-heavy products)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connectors.formats import lake_schema
from connectors.spec import DataProductSpec
from connectors.warehouse import WarehouseSink

T0 = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)
TEXTS = ["it's", "back\\slash\\", 'quote" and\ttab\nnewline', "é 漢字 🙂", "", None, "NULL", "X'00'"]
BLOBS = [b"\x00\x01\xff", b"'", b"\\", b"", None, b"\x00", b"plain", b"\n"]


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def warehouse_url(request: pytest.FixtureRequest) -> str:
    name = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}[request.param]
    return request.getfixturevalue(name)


def spec_of_every_type(fillfactor: int | None = None) -> DataProductSpec:
    name = f"types_{uuid.uuid4().hex[:8]}"
    return DataProductSpec.model_validate(
        {
            "name": name,
            "owner": "team:test",
            "topic": "types",
            "key": ["id"],
            "fields": [
                {"name": "id", "type": "string", "max_length": 32},
                {"name": "txt", "type": "string"},
                {"name": "blob", "type": "bytes"},
                {"name": "i32", "type": "int32"},
                {"name": "i64", "type": "int64"},
                {"name": "f64", "type": "float64"},
                {"name": "flag", "type": "boolean"},
                {"name": "ts", "type": "timestamp"},
                {"name": "day", "type": "date"},
            ],
            "event_time": {"field": "ts", "fallback": "kafka_timestamp"},
            "partitioning": {"start": "2026-11-01T00:00:00Z"},
            "sinks": {"database": {"table": name, "batch_rows": 100,
                                   **({"fillfactor": fillfactor} if fillfactor else {})}},
        }
    )


def rows(spec: DataProductSpec, offset: int) -> pa.Table:
    n = len(TEXTS)
    data = {
        "id": [f"k{i}" for i in range(n)],
        "txt": TEXTS,
        "blob": BLOBS,
        "i32": [2**31 - 1, -(2**31), 0, None, 7, 1, -1, 42],
        "i64": [2**63 - 1, -(2**63), 0, None, 1, 2, 3, 4],
        "f64": [1.5, -0.1, 1e20, None, 3.141592653589793, 0.0, -2.5e-8, 123456789.125],
        "flag": [True, False, None, True, False, True, False, True],
        "ts": [T0, None, datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), T0, T0, T0, T0, T0],
        "day": [date(2026, 11, 26), None, date(1970, 1, 1), date(2099, 12, 31)] * 2,
        "_topic": ["types"] * n,
        "_partition": [0] * n,
        "_offset": [offset + i for i in range(n)],
        "_timestamp": [T0] * n,
        "_key": [f"k{i}" for i in range(n)],
    }
    schema = lake_schema(spec)
    return pa.Table.from_pydict({k: data[k] for k in schema.names}, schema=schema)


def _normal(v):
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).astimezone(UTC)
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def test_every_type_round_trips_through_insert_and_update(warehouse_url):
    spec = spec_of_every_type()
    sink = WarehouseSink(spec, warehouse_url)
    try:
        first = rows(spec, 0)
        counts = sink.apply(first)
        assert counts.inserted == first.num_rows
        second = rows(spec, 100)  # the same keys again, newer: every row is updated
        counts = sink.apply(second)
        assert counts.updated == second.num_rows and counts.inserted == 0
        got = {r["id"]: r for r in sink.read_rows()}
        want = second.to_pylist()
        assert len(got) == len(want)
        for w in want:
            g = got[w["id"]]
            for col in ("txt", "blob", "i32", "i64", "f64", "ts", "day", "_offset"):
                assert _normal(g[col]) == _normal(w[col]), (col, w["id"], g[col], w[col])
            assert (None if g["flag"] is None else bool(g["flag"])) == w["flag"]
    finally:
        sink.dispose()


def test_postgres_tables_take_the_specs_fillfactor(pg_url):
    spec = spec_of_every_type(fillfactor=50)
    sink = WarehouseSink(spec, pg_url)
    try:
        sink.ensure_table()
        with sink.engine.connect() as conn:
            options = conn.execute(
                sa.text("SELECT reloptions FROM pg_class WHERE relname = :t"), {"t": spec.table_name}
            ).scalar_one()
        assert options == ["fillfactor=50"]
    finally:
        sink.dispose()
