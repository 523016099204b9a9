"""Change data capture against a real PostgreSQL (wal_level=logical) and the real broker:
snapshot then stream, inserts, updates, deletes (+ tombstones), key changes, truncate,
unchanged TOAST values, the type mapping, and the position recorded before the slot moves."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from connectors.metastore import Metastore
from connectors.sources.cdc import CaptureOptions, CdcError, capture
from connectors.sources.cdc.pgoutput import lsn_text
from connectors.sources.cdc.position import read_position
from tests.support import wait_for
from tests.support.cdc import (
    ORDERS_DDL,
    orders_product,
    orders_source,
    read_events,
    slot_streaming,
    sql,
)
from tests.support.runs import run_at


@pytest.fixture
def setup(cdc_db, make_topic, tmp_path, kafka_bootstrap):
    sql(cdc_db, ORDERS_DDL)
    topic = make_topic(partitions=1)
    ms = Metastore(f"sqlite:///{tmp_path / 'ms.db'}")
    product, source = orders_product(topic), orders_source(cdc_db)

    def run(**options):
        return capture(source, product, run_at(lake=None, metastore=ms, bootstrap=kafka_bootstrap), CaptureOptions(**options))

    return cdc_db, topic, ms, run


def test_snapshot_then_every_kind_of_change_in_commit_order(setup, kafka_bootstrap):
    url, topic, ms, run = setup
    sql(url, "INSERT INTO orders (id, customer, amount, status) SELECT g, 'c' || g, g * 1.5, 'new' FROM generate_series(1, 3) g")
    r = run()
    assert r.created_slot and r.created_publication and r.snapshot_rows == 3
    sql(url, "INSERT INTO orders (id, customer, amount) VALUES (10, 'ten', 10.0001)",
        "UPDATE orders SET status = 'paid' WHERE id = 1",
        "DELETE FROM orders WHERE id = 2")
    sql(url, "UPDATE orders SET id = 30 WHERE id = 3")  # a key change
    sql(url, "TRUNCATE orders")
    sql(url, "INSERT INTO orders (id, customer) VALUES (40, 'after truncate')")
    r = run()
    assert r.snapshot_rows == 0 and r.transactions == 4
    events = read_events(kafka_bootstrap, topic)
    ops = [(e["data"]["op"] if e["data"] else None, e["key"]) for e in events]
    assert ops == [("r", "1"), ("r", "2"), ("r", "3"),
                   ("c", "10"), ("u", "1"), ("d", "2"), (None, "2"),
                   ("d", "3"), (None, "3"), ("c", "30"),
                   ("t", None), ("c", "40")]
    ids = [e["headers"]["ce_id"] for e in events]
    assert len(set(ids)) == len(ids)
    first_txn = [e for e in events[3:7]]
    lsn = first_txn[0]["data"]["source"]["lsn"]
    assert [e["headers"]["ce_id"] for e in first_txn] == [f"flowsuite_shop_orders:{lsn_text(lsn)}:{n}" for n in range(4)]
    assert all(e["headers"]["ce_specversion"] == "1.0" and e["headers"]["content-type"] == "application/json" for e in events)
    snap = events[0]["data"]
    assert snap["source"]["snapshot"] == "true" and snap["before"] is None and snap["after"]["amount"] == "1.5000"
    upd = events[4]["data"]
    assert upd["before"] is None and upd["after"]["status"] == "paid"  # REPLICA IDENTITY DEFAULT
    assert events[5]["data"]["before"] == {"id": 2}  # the key only
    assert events[7]["data"]["before"] == {"id": 3} and events[9]["data"]["after"]["id"] == 30
    assert events[10]["data"]["source"]["table"] == "orders"
    # The recorded position is the last commit, and the server was told only that.
    pos = read_position(ms, "shop_orders", "flowsuite_shop_orders")
    assert pos.commit_lsn == events[-1]["data"]["source"]["lsn"] and pos.snapshot_done
    slot = sql(url, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'flowsuite_shop_orders'")
    assert r.slot_after is not None and r.slot_after.confirmed_flush_lsn >= pos.commit_lsn
    assert slot[0][0] is not None
    # Nothing new: a run publishes nothing, and nothing twice.
    again = run()
    assert again.events == 0 and len(read_events(kafka_bootstrap, topic)) == len(events)


def test_type_mapping_round_trips(setup, kafka_bootstrap):
    url, topic, ms, run = setup
    sql(url, "ALTER TABLE orders ADD COLUMN extra jsonb, ADD COLUMN ts timestamp, ADD COLUMN d date, "
             "ADD COLUMN f float8, ADD COLUMN nums numeric[], ADD COLUMN grid int[][], ADD COLUMN flag boolean, "
             "ADD COLUMN iv interval, ADD COLUMN j json, ADD COLUMN u uuid")
    row = ("INSERT INTO orders (id, customer, amount, placed_at, attrs, blob, tags, extra, ts, d, f, nums, grid, flag, iv, j, u) "
           "VALUES (%s, 'ünï \"q\"', 12345678.1234, '2026-11-30 12:34:56.789012+02', '{\"b\": [1, 2.50], \"a\": null}', "
           "'\\x00ff10'::bytea, ARRAY['x', 'y z', NULL, 'a,b', 'q\"t'], '{\"n\": 1e400}', '2026-01-02 03:04:05.5', '2026-02-28', "
           "0.1, ARRAY[1.10, NULL, 'NaN']::numeric[], '{{1,2},{3,4}}', true, '1 day 2 hours', '{\"k\":  1}', "
           "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')")
    sql(url, row, args=(1,))  # in the snapshot
    run()
    sql(url, row, args=(2,))  # in the stream
    run()
    events = read_events(kafka_bootstrap, topic)
    assert [e["data"]["op"] for e in events] == ["r", "c"]
    for e in events:
        a = e["data"]["after"]
        assert a["customer"] == 'ünï "q"'
        assert a["amount"] == "12345678.1234"  # exact, as a string
        assert a["placed_at"] == "2026-11-30T10:34:56.789012Z"  # the instant, in UTC
        assert json.loads(a["attrs"]) == {"a": None, "b": [1, 2.50]}  # jsonb stays JSON (text)
        assert a["extra"] == '{"n": 1' + "0" * 400 + "}"  # jsonb's exact number, as text: no float overflow
        assert base64.b64decode(a["blob"]) == b"\x00\xff\x10"
        assert a["tags"] == ["x", "y z", None, "a,b", 'q"t']
        assert a["ts"] == "2026-01-02T03:04:05.5" and a["d"] == "2026-02-28"
        assert a["f"] == 0.1 and a["flag"] is True
        assert a["nums"] == ["1.10", None, "NaN"] and a["grid"] == [[1, 2], [3, 4]]
        assert a["iv"] == "P1DT2H" and a["j"] == '{"k":  1}' and a["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"


def test_unchanged_toast_is_left_out_and_named_never_a_placeholder(setup, kafka_bootstrap):
    url, topic, ms, run = setup
    big = "".join(chr(65 + (i * 7919) % 26) for i in range(300_000))  # incompressible enough to be stored out of line
    run()
    sql(url, "INSERT INTO orders (id, customer, note) VALUES (1, 'a', %s)", args=(big,))
    sql(url, "UPDATE orders SET status = 'paid' WHERE id = 1")
    sql(url, "UPDATE orders SET note = 'short' WHERE id = 1")
    run()
    events = read_events(kafka_bootstrap, topic)
    assert [e["data"]["op"] for e in events] == ["c", "u", "u"]
    assert events[0]["data"]["after"]["note"] == big
    unchanged = events[1]["data"]
    assert "note" not in unchanged["after"] and unchanged["unchanged_toast"] == ["note"]
    assert unchanged["after"]["status"] == "paid"
    assert events[2]["data"]["after"]["note"] == "short" and "unchanged_toast" not in events[2]["data"]


def test_replica_identity_full_gives_before_images_and_fills_toast(setup, kafka_bootstrap):
    url, topic, ms, run = setup
    sql(url, "ALTER TABLE orders REPLICA IDENTITY FULL")
    big = "".join(chr(65 + (i * 7919) % 26) for i in range(300_000))
    run()
    sql(url, "INSERT INTO orders (id, customer, note) VALUES (1, 'a', %s)", args=(big,))
    sql(url, "UPDATE orders SET status = 'paid' WHERE id = 1", "DELETE FROM orders WHERE id = 1")
    r = run()
    assert r.warnings == []
    events = read_events(kafka_bootstrap, topic)
    upd, dele = events[1]["data"], events[2]["data"]
    assert upd["before"]["status"] is None and upd["before"]["customer"] == "a"
    assert dele["before"]["customer"] == "a" and dele["after"] is None


def test_changed_type_stops_naming_the_column_and_added_column_flows(setup, kafka_bootstrap):
    url, topic, ms, run = setup
    sql(url, "INSERT INTO orders (id, customer) VALUES (1, 'a')")
    run()
    sql(url, "ALTER TABLE orders ADD COLUMN coupon text", "INSERT INTO orders (id, customer, coupon) VALUES (2, 'b', 'X1')")
    run()
    assert read_events(kafka_bootstrap, topic)[-1]["data"]["after"]["coupon"] == "X1"
    sql(url, "ALTER TABLE orders ALTER COLUMN status TYPE integer USING 0", "INSERT INTO orders (id, customer) VALUES (3, 'c')")
    with pytest.raises(CdcError, match=r"column 'status' of public.orders changed type from text to integer"):
        run()
    assert len(read_events(kafka_bootstrap, topic)) == 2  # nothing of the new type went out
    with pytest.raises(CdcError, match="changed type"):  # and it stays stopped
        run()


def test_slot_creation_errors_are_clear(pg_logical, cdc_db, make_topic, tmp_path, kafka_bootstrap):
    sql(cdc_db, ORDERS_DDL, "CREATE ROLE plain LOGIN", "GRANT SELECT ON orders TO plain")
    ms = Metastore(f"sqlite:///{tmp_path / 'ms.db'}")
    product = orders_product(make_topic(partitions=1))
    plain = cdc_db.replace("postgres@", "plain@")
    with pytest.raises(CdcError, match=r"lacks the REPLICATION attribute \(ALTER ROLE plain REPLICATION\)"):
        capture(orders_source(plain), product, run_at(lake=None, metastore=ms, bootstrap=kafka_bootstrap))
    with pytest.raises(CdcError, match="table public.nope does not exist"):
        capture(orders_source(cdc_db, table="nope"), product, run_at(lake=None, metastore=ms, bootstrap=kafka_bootstrap))
    sql(cdc_db, "CREATE TABLE other (id int PRIMARY KEY)", "CREATE PUBLICATION elsewhere FOR TABLE other")
    with pytest.raises(CdcError, match="publication 'elsewhere' exists but does not publish public.orders"):
        capture(orders_source(cdc_db, publication="elsewhere"), product, run_at(lake=None, metastore=ms, bootstrap=kafka_bootstrap))
    sql(pg_logical.url, "DROP ROLE IF EXISTS plain_owner")
    # the machine's own server runs wal_level=replica: the message says what to change
    from tests.support.services import PG_HOST, PG_PORT
    replica_url = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
    try:
        sql(replica_url, "SELECT 1")
    except Exception:  # noqa: BLE001
        return
    if sql(replica_url, "SHOW wal_level")[0][0] != "logical":
        with pytest.raises(CdcError, match="wal_level is 'replica'; change data capture needs wal_level = logical"):
            capture(orders_source(replica_url), product, run_at(lake=None, metastore=ms, bootstrap=kafka_bootstrap))


def test_snapshot_with_concurrent_writes_every_row_once(setup, kafka_bootstrap):
    url, topic, ms, run = setup
    sql(url, "INSERT INTO orders (id, customer) SELECT g, 'c' FROM generate_series(1, 20000) g")
    stop = threading.Event()
    written = []

    def writer():
        i = 100_000
        while not stop.is_set():
            sql(url, "INSERT INTO orders (id, customer) VALUES (%s, 'w')", args=(i,))
            sql(url, "UPDATE orders SET status = 'touched' WHERE id = %s", args=(i - 100_000 + 1,))
            written.append(i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        r = run()
    finally:
        stop.set()
        t.join()
    run()
    events = read_events(kafka_bootstrap, topic)
    snapshot_ids = [e["data"]["after"]["id"] for e in events if e["data"]["op"] == "r"]
    created = [e["data"]["after"]["id"] for e in events if e["data"]["op"] == "c"]
    assert len(snapshot_ids) == len(set(snapshot_ids)) == r.snapshot_rows
    assert len(created) == len(set(created)) and not set(created) & set(snapshot_ids)
    assert set(snapshot_ids) | set(created) == set(range(1, 20001)) | set(written)  # every row, once
    final = {}
    for e in events:
        if e["data"] and e["data"]["after"]:
            final[e["data"]["after"]["id"]] = e["data"]["after"]["status"]
    rows = dict(sql(url, "SELECT id, status FROM orders"))
    assert final == rows


def test_idle_table_does_not_retain_wal(setup, kafka_bootstrap):
    url, topic, ms, run = setup
    sql(url, "CREATE TABLE busy (id serial PRIMARY KEY, pad text)")
    stop = threading.Event()
    follower = threading.Thread(target=run, kwargs={"follow": True, "stop": stop})
    follower.start()
    try:
        wait_for(lambda: slot_streaming(url), 30, what="the capture to stream from its slot")
        for _ in range(20):  # another table fills WAL (~40 MB); ours stays idle
            sql(url, "INSERT INTO busy (pad) SELECT repeat('x', 1000) FROM generate_series(1, 2000)")
        def unconfirmed() -> int | None:
            return sql(url, "SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots "
                            "WHERE slot_name = 'flowsuite_shop_orders'")[0][0]

        wait_for(lambda: (lag := unconfirmed()) is not None and lag < 1024 * 1024, 15, interval=0.5,
                 what="the idle slot to confirm the WAL (< 1 MB unconfirmed)",
                 detail=lambda: f"the slot holds {unconfirmed()} bytes unconfirmed")
    finally:
        stop.set()
        follower.join(30)
    assert not follower.is_alive()


def test_stop_while_changes_keep_coming_loses_nothing(setup, kafka_bootstrap):
    """What Ctrl-C does to `flowsuite cdc run --follow`: the stop flag ends it at a commit."""
    url, topic, ms, run = setup
    run()
    stop_writer, stop = threading.Event(), threading.Event()
    counter = {"n": 0}

    def writer():
        while not stop_writer.is_set():
            sql(url, "INSERT INTO orders (id, customer) SELECT g, 'w' FROM generate_series(%s, %s) g",
                args=(counter["n"] + 1, counter["n"] + 50))
            counter["n"] += 50

    w = threading.Thread(target=writer)
    follower = threading.Thread(target=run, kwargs={"follow": True, "stop": stop})
    w.start()
    follower.start()
    wait_for(lambda: slot_streaming(url) and counter["n"] >= 1000, 30,
             what="the capture streaming while the writer keeps writing")
    stop.set()
    stopped_at = time.monotonic()
    follower.join(20)
    assert not follower.is_alive() and time.monotonic() - stopped_at < 20
    stop_writer.set()
    w.join()
    run()
    events = read_events(kafka_bootstrap, topic)
    ids = {e["headers"]["ce_id"] for e in events}
    assert {e["data"]["after"]["id"] for e in events} == set(range(1, counter["n"] + 1))
    assert len(ids) == counter["n"]  # re-sent events (if any) carry the same ids
