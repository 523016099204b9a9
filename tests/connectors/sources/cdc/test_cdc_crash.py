"""SIGKILL of the capture process at random points while the table changes, and PostgreSQL
restarted mid-stream: after a restart the warehouse equals the source table exactly and the
lake holds every change once (ce_id unique; one c/u/d row per committed insert/update/delete).

A few kills under `make test`; 50 at FLOWSUITE_RELIABILITY=full (`make reliability`)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from connectors.flows import land
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.sources.cdc import CaptureOptions, capture
from connectors.warehouse import WarehouseSink, sync
from tests.support import wait_for
from tests.support.cdc import (
    ORDERS_DDL,
    REPO,
    orders_product,
    orders_source,
    slot_caught_up,
    slot_streaming,
    sql,
)
from tests.support.reliability_table import SEED, iterations, record
from tests.support.runs import run_at


class Writer(threading.Thread):
    """Random inserts, updates and deletes in small transactions; counts what committed."""

    def __init__(self, url: str, seed: int):
        super().__init__(daemon=True)
        self.url, self.rng = url, random.Random(seed)
        self.stop = threading.Event()
        self.counts: Counter = Counter()
        self.next_id = 10_000

    def run(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.url)
        try:
            while not self.stop.is_set():
                with conn, conn.cursor() as cur:
                    done = Counter()
                    for _ in range(self.rng.randint(1, 5)):
                        op = self.rng.random()
                        if op < 0.5:
                            cur.execute("INSERT INTO orders (id, customer, amount) VALUES (%s, 'w', %s)",
                                        (self.next_id, self.rng.randint(1, 10**6) / 100))
                            self.next_id += 1
                            done["c"] += 1
                        elif op < 0.85:
                            cur.execute("UPDATE orders SET status = %s WHERE id = (SELECT id FROM orders "
                                        "ORDER BY random() LIMIT 1)", (f"s{self.rng.randint(0, 99)}",))
                            done["u"] += cur.rowcount
                        else:
                            cur.execute("DELETE FROM orders WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)")
                            done["d"] += cur.rowcount
                self.counts.update(done)
                time.sleep(self.rng.random() * 0.01)  # the writer's pace
        finally:
            conn.close()


def _worker(source, product, ms_url, bootstrap, crash_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("FLOWSUITE_CRASH_AT", None)
    if crash_at:
        env["FLOWSUITE_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests/workers/cdc_worker.py"), source.model_dump_json(by_alias=True),
         product.model_dump_json(), ms_url, bootstrap, "--follow"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _settle(cdc_db, product, source, ms, lake, sink, bootstrap, writer):
    capture(source, product, run_at(lake=None, metastore=ms, bootstrap=bootstrap))  # bounded: until caught up
    land(product, lake=lake, metastore=ms, bootstrap=bootstrap, idle_timeout_s=2)
    sync(product, lake=lake, metastore=ms, sink=sink)
    table = {r[0]: (r[1], r[2]) for r in sql(cdc_db, "SELECT id, status, amount::text FROM orders")}
    warehouse = {r["id"]: (r["status"], r["amount"]) for r in sink.read_rows()}
    rows = lake.read_tables([f.path for f in ms.live_files(product.name)])
    ops = Counter(rows.column("_op").to_pylist())
    ids = rows.column("ce_id").to_pylist()
    return table, warehouse, ops, ids


@pytest.mark.parametrize("scenario", ["random", "points"])
def test_sigkill_capture_then_restart_warehouse_equals_table(scenario, cdc_db, make_topic, tmp_path, kafka_bootstrap):
    sql(cdc_db, ORDERS_DDL, "INSERT INTO orders (id, customer) SELECT g, 'c' FROM generate_series(1, 500) g")
    product = orders_product(make_topic(partitions=1))
    source = orders_source(cdc_db, max_batch_changes=20)
    ms_url = f"sqlite:///{tmp_path / 'ms.db'}"
    ms = Metastore(ms_url)
    lake = Lake(str(tmp_path / "lake"))
    sink = WarehouseSink(product, f"sqlite:///{tmp_path / 'wh.db'}")
    capture(source, product, run_at(lake=None, metastore=ms, bootstrap=kafka_bootstrap))  # the snapshot
    rng = random.Random(SEED)
    writer = Writer(cdc_db, SEED)
    writer.start()
    kills = iterations(quick=3)
    points = ["cdc_after_ack", "cdc_after_record"]
    try:
        for i in range(kills):
            if scenario == "random":
                proc = _worker(source, product, ms_url, kafka_bootstrap)
                proc.stdout.readline()  # imported and about to capture
                time.sleep(rng.uniform(0.05, 1.5))  # a seeded random moment for the kill: the scenario
                proc.kill()
            else:
                proc = _worker(source, product, ms_url, kafka_bootstrap, f"{points[i % 2]}:{rng.randint(1, 4)}")
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail("the capture worker neither crashed nor ended")
            assert proc.returncode == -9, proc.stderr.read()[-2000:]
            if i % 3 == 0:  # land and sync between kills too: duplicates must meet earlier files
                land(product, lake=lake, metastore=ms, bootstrap=kafka_bootstrap, idle_timeout_s=1)
    finally:
        writer.stop.set()
        writer.join(10)
    table, warehouse, ops, ids = _settle(cdc_db, product, source, ms, lake, sink, kafka_bootstrap, writer)
    assert warehouse == table
    assert len(ids) == len(set(ids))  # every change once
    assert ops["r"] == 500 and ops["c"] == writer.counts["c"] and ops["u"] == writer.counts["u"]
    assert ops["d"] == writer.counts["d"]
    changes = sum(writer.counts.values())
    record(f"cdc: SIGKILL capture ({scenario})", kills, changes, recovered=kills,
           note="warehouse == table; lake c/u/d == committed changes")
    sink.dispose()


def test_sigkill_during_snapshot_restarts_it_cleanly(cdc_db, make_topic, tmp_path, kafka_bootstrap):
    sql(cdc_db, ORDERS_DDL, "INSERT INTO orders (id, customer) SELECT g, 'c' FROM generate_series(1, 3000) g")
    product = orders_product(make_topic(partitions=1))
    source = orders_source(cdc_db)
    ms_url = f"sqlite:///{tmp_path / 'ms.db'}"
    proc = _worker(source, product, ms_url, kafka_bootstrap, "cdc_snapshot_acked")
    proc.wait(120)
    assert proc.returncode == -9, proc.stderr.read()[-2000:]
    sql(cdc_db, "DELETE FROM orders WHERE id <= 10", "UPDATE orders SET status = 'x' WHERE id BETWEEN 11 AND 20",
        "INSERT INTO orders (id, customer) VALUES (5000, 'new')")
    ms, lake = Metastore(ms_url), Lake(str(tmp_path / "lake"))
    sink = WarehouseSink(product, f"sqlite:///{tmp_path / 'wh.db'}")
    table, warehouse, ops, ids = _settle(cdc_db, product, source, ms, lake, sink, kafka_bootstrap, None)
    assert warehouse == table
    # The second snapshot's rows whose id landed in the first were dropped as duplicates; the
    # row inserted in between is in both the new snapshot and the stream (the slot had not moved).
    assert ops["r"] == 3001 and ops["c"] == 1 and ops["u"] == 10 and ops["d"] == 10
    assert len(ids) == len(set(ids))
    record("cdc: SIGKILL after the snapshot was acknowledged", 1, 3000)
    sink.dispose()


def test_postgres_restarted_mid_stream(pg_logical, cdc_db, make_topic, tmp_path, kafka_bootstrap):
    sql(cdc_db, ORDERS_DDL)
    product = orders_product(make_topic(partitions=1))
    source = orders_source(cdc_db)
    ms, lake = Metastore(f"sqlite:///{tmp_path / 'ms.db'}"), Lake(str(tmp_path / "lake"))
    stop = threading.Event()
    results = []
    follower = threading.Thread(target=lambda: results.append(
        capture(source, product, run_at(lake=None, metastore=ms, bootstrap=kafka_bootstrap), CaptureOptions(follow=True, stop=stop))))
    follower.start()
    try:
        wait_for(lambda: slot_streaming(cdc_db), 30, what="the capture to stream from its slot")
        sql(cdc_db, "INSERT INTO orders (id, customer) SELECT g, 'a' FROM generate_series(1, 100) g")
        pg_logical.restart()
        sql(cdc_db, "UPDATE orders SET status = 'after restart' WHERE id <= 50", "DELETE FROM orders WHERE id > 90")
        wait_for(lambda: slot_caught_up(cdc_db), 60, interval=0.2,
                 what="the capture to reconnect and confirm every change")
    finally:
        stop.set()
        follower.join(60)
    assert results and results[0].reconnects >= 1
    sink = WarehouseSink(product, f"sqlite:///{tmp_path / 'wh.db'}")
    table, warehouse, ops, ids = _settle(cdc_db, product, source, ms, lake, sink, kafka_bootstrap, None)
    assert warehouse == table and len(table) == 90
    assert ops["c"] == 100 and ops["u"] == 50 and ops["d"] == 10 and len(ids) == len(set(ids))
    record("cdc: PostgreSQL restarted mid-stream", 1, 160)
    sink.dispose()
