"""Change data capture: throughput of a bulk update and commit → Kafka latency.

    python -m bench.cdc [--rows 200000] [--rate 1000] [--seconds 20]

On a throwaway PostgreSQL cluster (wal_level=logical) and the embedded broker:

1. **Throughput**: one UPDATE of `--rows` rows (one transaction), captured and published
   (every event acknowledged, the position recorded, the slot confirmed) by a bounded
   `capture` run; changes/s against the ceiling of decoding the same changes alone, in the
   same run: (a) the honest ceiling, goal ≥ 0.5: a bare psycopg2 replication loop on its own
   pgoutput slot that decodes every change into a tuple of column texts (no events, JSON, broker
   or position store); (b) for reference, no goal: `pg_logical_slot_peek_binary_changes` on a
   second slot (the server's decoding only, bytes, nothing decoded client-side). Published anchor
   quoted beside them (not measured here): Sequin, 50k ops/s per slot, p99 253 ms.
2. **Latency**: `capture --follow` while a writer commits `--rate` changes/s (10 rows per
   transaction); per event, the time from the commit (`source.ts_ms`, the server's commit
   timestamp, same machine clock) to the moment a consumer has it. p50 / p99; goal p99 ≤ 200 ms.
   The consumer's own fetch wait is included (fetch.wait.max.ms=5), so this is an upper bound.

Writes bench/results/cdc.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import psycopg2.errors
from confluent_kafka import Consumer, TopicPartition

from connectors.flows import RunContext
from connectors.metastore import Metastore
from connectors.sources.cdc import CaptureOptions, capture
from connectors.sources.cdc.spec import CdcSourceSpec
from connectors.spec import DataProductSpec
from orchestration.services.broker import running_broker
from orchestration.services.pg_cluster import running_cluster

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "bench" / "results"

_I16, _I32 = struct.Struct(">h"), struct.Struct(">i")

# Published anchor, quoted beside the figures (not measured here): Sequin's Postgres CDC,
# about 50k ops/s per replication slot with p99 253 ms (the figures issue 26 asks to quote).
SEQUIN = "Sequin (published): 50k ops/s per slot, p99 253 ms"


def _machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def _sql(url: str, *statements: str) -> list:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            out: list = []
            for s in statements:
                cur.execute(s)
                out = cur.fetchall() if cur.description else out
            return out
    finally:
        conn.close()


def _specs(url: str, topic: str) -> tuple[CdcSourceSpec, DataProductSpec]:
    source = CdcSourceSpec.model_validate({"name": "bench", "product": "bench_orders", "mode": "cdc",
                                           "connection": {"url": url}, "table": "orders", "max_batch_changes": 5000})
    product = DataProductSpec.model_validate({
        "name": "bench_orders", "owner": "team:bench", "topic": topic, "format": "cloudevents", "key": "id",
        "fields": [{"name": "id", "type": "int64", "required": True}, {"name": "customer", "type": "string"},
                   {"name": "amount", "type": "string"}, {"name": "status", "type": "string"}],
        "event_time": {"source": "ce_time", "fallback": "kafka_timestamp"},
        "partitioning": {"start": "2020-01-01T00:00:00Z"},
        "cloudevents": {"dedupe_on_id": True, "data_layout": "debezium"},
    })
    return source, product


def _tuple(buf: bytes, pos: int) -> tuple[tuple, int]:
    """pgoutput TupleData at `pos`: Int16 columns, then per column 'n' (null), 'u' (unchanged
    TOAST) or 't' + Int32 length + text bytes. Returns the column values and the next position."""
    (ncols,) = _I16.unpack_from(buf, pos)
    pos += 2
    out = []
    for _ in range(ncols):
        kind = buf[pos]
        pos += 1
        if kind == 116:  # 't'
            (size,) = _I32.unpack_from(buf, pos)
            pos += 4
            out.append(buf[pos:pos + size].decode())
            pos += size
        else:
            out.append(None)
    return tuple(out), pos


def _drop_slot(url: str, slot: str, wait_s: float = 10.0) -> None:
    """Drop a slot whose replication connection was just closed: its walsender may still hold it
    for a moment ("replication slot ... is active for PID ..."), so retry until it lets go."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            _sql(url, f"SELECT pg_drop_replication_slot('{slot}')")
            return
        except psycopg2.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def bare_replication(url: str, slot: str, publication: str, changes: int) -> float:
    """The CDC ceiling: a bare psycopg2 replication loop over a pgoutput slot, decoding every
    Insert/Update/Delete into a tuple of column texts and confirming the flush at the end —
    no events, no JSON, no broker, no position store. Seconds until `changes` tuples."""
    import psycopg2.extras

    conn = psycopg2.connect(url, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        cur = conn.cursor()
        cur.start_replication(slot_name=slot, decode=False, start_lsn=0,
                              options={"proto_version": "1", "publication_names": publication})
        started = time.perf_counter()
        n, last = 0, None
        deadline = time.monotonic() + 300
        while n < changes:
            msg = cur.read_message()
            if msg is None:
                if time.monotonic() > deadline:
                    raise SystemExit(f"bare replication loop saw {n} of {changes} changes in 300 s")
                time.sleep(0.0005)
                continue
            buf = msg.payload
            tag = buf[0]
            if tag == 85:  # 'U': Int32 relation, optional 'K'/'O' old tuple, then 'N' new tuple
                pos = 5
                if buf[pos] in (75, 79):
                    _, pos = _tuple(buf, pos + 1)
                _, _ = _tuple(buf, pos + 1)
                n += 1
            elif tag == 73:  # 'I': Int32 relation, 'N', tuple
                _tuple(buf, 6)
                n += 1
            elif tag == 68:  # 'D': Int32 relation, 'K'/'O', tuple
                _tuple(buf, 6)
                n += 1
            last = msg
        if last is not None:
            cur.send_feedback(flush_lsn=last.data_start)
        return time.perf_counter() - started
    finally:
        conn.close()


def throughput(url: str, bootstrap: str, ms: Metastore, rows: int) -> dict:
    _sql(url, "CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric(12,2), status text)",
         f"INSERT INTO orders SELECT g, 'customer-' || g, g / 100.0, 'new' FROM generate_series(1, {rows}) g")
    source, product = _specs(url, "bench.cdc.bulk")
    run = RunContext(lake=None, metastore=ms, bootstrap=bootstrap)
    capture(source, product, run)  # slot, publication and snapshot
    _sql(url, "SELECT pg_create_logical_replication_slot('bench_peek', 'pgoutput')",
         "SELECT pg_create_logical_replication_slot('bench_bare', 'pgoutput')")
    _sql(url, "UPDATE orders SET status = 'paid', amount = amount + 1")
    started = time.perf_counter()
    r = capture(source, product, run)
    took = time.perf_counter() - started
    assert r.events == rows, (r.events, rows)
    started = time.perf_counter()
    (n,) = _sql(url, "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('bench_peek', NULL, NULL, "
                     f"'proto_version', '1', 'publication_names', '{source.publication_name}')")[0]
    ceiling_took = time.perf_counter() - started
    assert n >= rows, n
    _sql(url, "SELECT pg_drop_replication_slot('bench_peek')")
    bare_took = bare_replication(url, "bench_bare", source.publication_name, rows)
    _drop_slot(url, "bench_bare")
    return {"figure": rows / took, "ceiling": rows / ceiling_took, "seconds": took, "ceiling_seconds": ceiling_took,
            "bare": rows / bare_took, "bare_seconds": bare_took}


def latency(url: str, bootstrap: str, ms: Metastore, rate: int, seconds: float) -> dict:
    _sql(url, "CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, customer text, amount numeric(12,2), status text)",
         "TRUNCATE orders")
    source, product = _specs(url, "bench.cdc.latency")
    source = source.model_copy(update={"name": "bench_latency", "slot": "bench_latency",
                                       "publication": "bench_latency", "max_batch_changes": 1000})
    run = RunContext(lake=None, metastore=ms, bootstrap=bootstrap)
    capture(source, product, run)
    stop = threading.Event()
    follower = threading.Thread(target=capture, args=(source, product, run, CaptureOptions(follow=True, stop=stop)),
                                daemon=True)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-cdc", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 5, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(product.topic, 0, 0)])
    lat: list[float] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            for m in consumer.consume(1000, timeout=0.05):
                if m.error() or m.value() is None:
                    continue
                now = time.time()
                data = json.loads(m.value())
                if data.get("op") == "c":
                    lat.append(now * 1000 - data["source"]["ts_ms"])

    reader = threading.Thread(target=consume, daemon=True)
    follower.start()
    reader.start()
    time.sleep(2)
    conn = psycopg2.connect(url)
    per_txn = 10
    interval = per_txn / rate
    next_id, t0 = 1, time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < seconds:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders SELECT g, 'c', 1.00, 'new' FROM generate_series(%s, %s) g",
                        (next_id, next_id + per_txn - 1))
        next_id += per_txn
        k += 1
        pause = t0 + k * interval - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    achieved = (next_id - 1) / (time.perf_counter() - t0)
    conn.close()
    deadline = time.time() + 30
    while len(lat) < next_id - 1 and time.time() < deadline:
        time.sleep(0.1)
    done.set()
    stop.set()
    follower.join(30)
    reader.join(5)
    consumer.close()
    lat.sort()
    return {"p50": statistics.median(lat), "p99": lat[int(len(lat) * 0.99) - 1], "events": len(lat),
            "changes": next_id - 1, "rate": achieved}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    with running_cluster() as pg, running_broker() as broker, tempfile.TemporaryDirectory() as tmp:
        ms = Metastore(f"sqlite:///{tmp}/ms.db")
        t = throughput(pg.url, broker.bootstrap, ms, args.rows)
        lt = latency(pg.url, broker.bootstrap, ms, args.rate, args.seconds)
    rows = [
        {"what": f"CDC: bulk update of {args.rows:,} rows, captured + published vs raw slot reads (bytes only)",
         "figure": round(t["figure"]), "ceiling": round(t["ceiling"]), "ratio": t["figure"] / t["ceiling"],
         "goal": None, "unit": "changes/s"},
        {"what": f"CDC: bulk update of {args.rows:,} rows, captured + published vs bare pgoutput→tuples loop",
         "anchor": SEQUIN,
         "figure": round(t["figure"]), "ceiling": round(t["bare"]), "ratio": t["figure"] / t["bare"],
         "goal": 0.5, "unit": "changes/s"},
        {"what": f"CDC: commit → Kafka latency p50 at {lt['rate']:.0f} changes/s", "figure": round(lt["p50"], 1),
         "ceiling": None, "ratio": None, "goal": "-", "unit": "ms"},
        {"what": f"CDC: commit → Kafka latency p99 at {lt['rate']:.0f} changes/s", "figure": round(lt["p99"], 1),
         "ceiling": None, "ratio": None, "goal": "<= 200 ms", "unit": "ms"},
    ]
    for r in rows:
        ceiling = f"{r['ceiling']:,}" if r["ceiling"] else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        print(f"{r['what']:<70} {r['figure']:>10,} {ceiling:>10} {ratio:>6}")
    print(f"(throughput {t['seconds']:.2f} s vs peek {t['ceiling_seconds']:.2f} s vs bare loop "
          f"{t['bare_seconds']:.2f} s; latency over {lt['events']:,} events)")
    print(SEQUIN)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cdc.json").write_text(json.dumps({"bench": "cdc", "machine": _machine(), "rows": rows,
                                                  "throughput": t, "latency": lt}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
