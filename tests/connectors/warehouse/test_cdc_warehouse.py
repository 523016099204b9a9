"""From the table to the warehouse through the lake: landing decodes the change events
(`_op`, `_lsn`, `_unchanged`), the sink applies deletes, truncate and partial updates, and
the warehouse table ends equal to the source table (SQLite and PostgreSQL warehouses)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectors.flows import land
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.sources.cdc import capture
from connectors.warehouse import WarehouseSink, sync
from connectors.warehouse.cdc import by_unchanged, carry_unchanged, split_at_truncate
from tests.support.cdc import (
    ORDERS_DDL,
    orders_product,
    orders_source,
    sql,
)
from tests.support.runs import run_at

COLUMNS = ["id", "customer", "amount", "status", "note", "tags"]
BIG = "".join(chr(65 + (i * 7919) % 26) for i in range(300_000))


def source_state(url: str) -> dict:
    rows = sql(url, "SELECT id, customer, amount::text, status, note, array_to_json(tags)::text FROM orders")
    return {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in rows}


def warehouse_state(sink: WarehouseSink) -> dict:
    out = {}
    for r in sink.read_rows():
        row = {c: r[c] for c in COLUMNS}
        out[row["id"]] = row
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path, pg_logical):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wh.db'}"
    import uuid

    import psycopg2

    name = f"wh_{uuid.uuid4().hex[:10]}"
    c = psycopg2.connect(pg_logical.url)
    c.autocommit = True
    c.cursor().execute(f"CREATE DATABASE {name}")
    c.close()
    return pg_logical.database_url(name).replace("postgresql://", "postgresql+psycopg://")


def test_warehouse_equals_the_table_after_every_kind_of_change(cdc_db, make_topic, tmp_path, kafka_bootstrap, warehouse_url):
    sql(cdc_db, ORDERS_DDL)
    product = orders_product(make_topic(partitions=1))
    source = orders_source(cdc_db)
    ms = Metastore(f"sqlite:///{tmp_path / 'ms.db'}")
    lake = Lake(str(tmp_path / "lake"))
    sink = WarehouseSink(product, warehouse_url)

    def cycle():
        capture(source, product, run_at(lake=None, metastore=ms, bootstrap=kafka_bootstrap))
        land(product, lake=lake, metastore=ms, bootstrap=kafka_bootstrap, idle_timeout_s=2)
        sync(product, lake=lake, metastore=ms, sink=sink)
        assert warehouse_state(sink) == source_state(cdc_db)

    sql(cdc_db, "INSERT INTO orders (id, customer, amount, tags) SELECT g, 'c' || g, g / 3.0, ARRAY['a', 'b'] "
                "FROM generate_series(1, 50) g",
        "INSERT INTO orders (id, customer, note) VALUES (100, 'big', %s)", args=(BIG,))
    cycle()
    sql(cdc_db, "UPDATE orders SET status = 'paid' WHERE id <= 10 OR id = 100",  # 100: its note is unchanged TOAST
        "DELETE FROM orders WHERE id BETWEEN 20 AND 25",
        "UPDATE orders SET id = 1000 WHERE id = 30",
        "INSERT INTO orders (id, customer) VALUES (200, 'new')")
    cycle()
    assert warehouse_state(sink)[100]["note"] == BIG  # the partial update kept the stored value
    sql(cdc_db, "UPDATE orders SET status = 'shipped' WHERE id = 100", "UPDATE orders SET customer = 'BIG' WHERE id = 100")
    cycle()  # two unchanged-TOAST versions of one key in one batch
    sql(cdc_db, "TRUNCATE orders", "INSERT INTO orders (id, customer) VALUES (1, 'after')",
        "INSERT INTO orders (id, customer, note) VALUES (2, 'big again', %s)", args=(BIG,))
    sql(cdc_db, "UPDATE orders SET status = 'x' WHERE id = 2")
    cycle()
    rows = lake.read_tables([f.path for f in ms.live_files(product.name)])
    ops = rows.column("_op").to_pylist()
    assert ops.count("r") == 51 and ops.count("t") == 1 and ops.count("d") == 7
    marked = [u for u in rows.column("_unchanged").to_pylist() if u]
    assert marked and all(u == ["note"] for u in marked)
    notes = [n for n, u in zip(rows.column("note").to_pylist(), rows.column("_unchanged").to_pylist(), strict=True) if u]
    assert all(n is None for n in notes)  # null and named: never a placeholder
    assert len(set(rows.column("ce_id").to_pylist())) == rows.num_rows
    sink.dispose()


def _t(**cols) -> pa.Table:
    n = len(next(iter(cols.values())))
    base = {"_partition": [0] * n, "_offset": list(range(n))}
    return pa.table({**cols, **base})


def test_truncate_split_and_unchanged_carry():
    rows = _t(id=[1, None, 2], _op=["c", "t", "c"])
    after, truncated = split_at_truncate(rows)
    assert truncated and after.column("id").to_pylist() == [2]
    assert split_at_truncate(_t(id=[1], _op=["c"]))[1] is False
    rows = _t(id=[1, 1, 1, 2], note=["big", None, None, None],
              _unchanged=pa.array([None, ["note"], ["note"], ["note"]], pa.list_(pa.string())))
    carried = carry_unchanged(rows, ["id"])
    assert carried.column("note").to_pylist() == ["big", "big", "big", None]
    assert carried.column("_unchanged").to_pylist() == [None, None, None, ["note"]]
    groups = by_unchanged(carried)
    assert [(g, t.column("id").to_pylist()) for g, t in groups] == [((), [1, 1, 1]), (("note",), [2])]


def test_added_column_becomes_a_nullable_column_of_the_product(cdc_db, make_topic, tmp_path, kafka_bootstrap):
    sql(cdc_db, ORDERS_DDL, "INSERT INTO orders (id, customer) VALUES (1, 'a')")
    topic = make_topic(partitions=1)
    product = orders_product(topic)
    source = orders_source(cdc_db)
    ms = Metastore(f"sqlite:///{tmp_path / 'ms.db'}")
    lake = Lake(str(tmp_path / "lake"))
    wh = f"sqlite:///{tmp_path / 'wh.db'}"
    capture(source, product, run_at(lake=None, metastore=ms, bootstrap=kafka_bootstrap))
    sql(cdc_db, "ALTER TABLE orders ADD COLUMN coupon text", "INSERT INTO orders (id, customer, coupon) VALUES (2, 'b', 'X1')")
    capture(source, product, run_at(lake=None, metastore=ms, bootstrap=kafka_bootstrap))
    land(product, lake=lake, metastore=ms, bootstrap=kafka_bootstrap, idle_timeout_s=2)  # before the owner adds the field
    sql(cdc_db, "UPDATE orders SET coupon = 'Y2' WHERE id = 1")
    capture(source, product, run_at(lake=None, metastore=ms, bootstrap=kafka_bootstrap))
    evolved = orders_product(topic, fields=[*[f.model_dump() for f in product.fields], {"name": "coupon", "type": "string"}])
    land(evolved, lake=lake, metastore=ms, bootstrap=kafka_bootstrap, idle_timeout_s=2)
    sink = WarehouseSink(evolved, wh)
    sync(evolved, lake=lake, metastore=ms, sink=sink)
    rows = {r["id"]: r["coupon"] for r in sink.read_rows()}
    assert rows == {1: "Y2", 2: None}  # landed before the field existed: null, as the evolution path does
    sink.dispose()
