"""Benchmark: the warehouse sink's UPSERT on PostgreSQL vs plain COPY and a naive executemany.

    .venv/bin/python bench/upsert.py [--rows 1000000] [--baseline-rows 100000] [--batch-rows 50000]

In a throwaway database on the machine's PostgreSQL (127.0.0.1:5432, user postgres, dropped at
the end), with a clicks-shaped table (text key, 4 text, bigint, timestamptz, partition, offset):

- sink: `WarehouseSink.apply` in batches of `--batch-rows` (per-key reduction, COPY into a
  temporary staging table, guarded INSERT … ON CONFLICT, offsets in the same transaction);
- ceiling: plain COPY of the same rows (CSV written by Arrow with the sink's own
  `copy_csv_chunks`, so it gets the same formatting speed-ups) into an empty table of the same
  shape with its primary key — nothing checked, nothing updated, one commit;
- baseline: psycopg 3 `cursor.executemany` of the guarded `INSERT … ON CONFLICT DO UPDATE …
  WHERE`, one row per parameter set, on a `--baseline-rows` subset (rows/s is a rate;
  extrapolated). psycopg 3 runs executemany in pipeline mode (no round trip per row), so this
  is the *strong* form of a naive sink; for context the bench also prints one `execute` per
  row (a round trip each, `--per-row-rows`), which is what a naive loop costs; the goal is
  judged against executemany.

Insert-heavy: every key is new. Update-heavy: the same keys again with higher offsets, so
every row is replaced. Prints a table and appends JSON lines to bench/results/upsert.json.
The lake read is not measured here (the sink's write path is).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from connectors.formats import lake_schema  # noqa: E402
from connectors.spec import DataProductSpec  # noqa: E402
from connectors.warehouse import WarehouseSink, copy_csv_chunks  # noqa: E402

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def bench_spec(table: str) -> DataProductSpec:
    return DataProductSpec.model_validate(
        {
            "name": table,
            "owner": "team:bench",
            "topic": "bench",
            "key": "event_id",
            "fields": [
                {"name": "event_id", "type": "string"},
                {"name": "user_id", "type": "string"},
                {"name": "partner_id", "type": "string"},
                {"name": "ad_id", "type": "string"},
                {"name": "kind", "type": "string"},
                {"name": "cost_micros", "type": "int64"},
                {"name": "event_time", "type": "timestamp"},
            ],
            "event_time": {"field": "event_time"},
            "partitioning": {"start": "2026-11-01T00:00:00Z"},
            "sinks": {"database": {"table": table}},
        }
    )


def make_rows(spec: DataProductSpec, n: int, offset_base: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = pa.array([f"e-{i:09d}" for i in range(n)])
    t0 = datetime(2026, 11, 26, 10, tzinfo=UTC)
    times = pa.array((np.datetime64(t0.replace(tzinfo=None), "us") + rng.integers(0, 3_600_000_000, n).astype("timedelta64[us]")),
                     pa.timestamp("us", tz="UTC"))
    part = np.arange(n) % 2
    table = pa.table(
        {
            "event_id": ids,
            "user_id": pa.array([f"u-{u}" for u in rng.integers(0, 50_000, n)]),
            "partner_id": pa.array([f"p-{p:03d}" for p in rng.integers(0, 250, n)]),
            "ad_id": pa.array([f"ad-{a}" for a in rng.integers(0, 5_000, n)]),
            "kind": pa.array(np.where(rng.random(n) < 0.1, "click", "impression")),
            "cost_micros": pa.array(rng.integers(0, 100_000, n)),
            "event_time": times,
            "_topic": pa.array(["bench"] * n),
            "_partition": pa.array(part, pa.int32()),
            "_offset": pa.array(offset_base + np.arange(n) // 2, pa.int64()),
            "_timestamp": times.cast(pa.timestamp("ms", tz="UTC"), safe=False),
            "_key": ids,
        }
    )
    return table.select(lake_schema(spec).names).cast(lake_schema(spec))


def run_sink(url: str, spec: DataProductSpec, rows: pa.Table, batch_rows: int) -> tuple[float, dict]:
    sink = WarehouseSink(spec, url)
    sink.ensure_table()
    totals = {"inserted": 0, "updated": 0, "skipped_stale": 0}
    started = time.perf_counter()
    offsets = sink.sink_offsets()
    for lo in range(0, rows.num_rows, batch_rows):
        chunk = rows.slice(lo, batch_rows)
        advance = {0: int(chunk.column("_offset")[-1].as_py()) + 1, 1: int(chunk.column("_offset")[-1].as_py()) + 1}
        counts = sink.apply(chunk, advance_to=advance, expected={p: offsets.get(p) for p in advance})
        offsets.update(advance)
        for k in totals:
            totals[k] += getattr(counts, k)
    elapsed = time.perf_counter() - started
    sink.dispose()
    return elapsed, totals


def table_ddl(name: str) -> str:
    return (f'CREATE TABLE "{name}" (event_id TEXT PRIMARY KEY, user_id TEXT, partner_id TEXT, ad_id TEXT, kind TEXT, '
            "cost_micros BIGINT, event_time TIMESTAMPTZ, _partition INTEGER NOT NULL, _offset BIGINT NOT NULL)")


COLS = ["event_id", "user_id", "partner_id", "ad_id", "kind", "cost_micros", "event_time", "_partition", "_offset"]


def run_copy(dsn: str, rows: pa.Table) -> float:
    """One COPY of all rows, CSV by the same Arrow writer as the sink (`copy_csv_chunks`: the
    ceiling gets every formatting speed-up the sink gets), one commit."""
    name = f"copy_{uuid.uuid4().hex[:8]}"
    data = rows.select(COLS)
    with psycopg.connect(dsn) as conn:
        conn.execute(table_ddl(name))
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f'COPY "{name}" ({", ".join(COLS)}) FROM STDIN WITH (FORMAT csv)') as copy:
            for chunk in copy_csv_chunks(data):
                copy.write(chunk)
        conn.commit()
        return time.perf_counter() - started


def upsert_sql(table: str) -> str:
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLS[1:])
    return (f'INSERT INTO "{table}" ({", ".join(COLS)}) VALUES ({", ".join(["%s"] * len(COLS))}) '
            f'ON CONFLICT (event_id) DO UPDATE SET {sets} WHERE (EXCLUDED._partition, EXCLUDED._offset) > '
            f'("{table}"._partition, "{table}"._offset)')


def run_per_row(dsn: str, table: str, rows: pa.Table) -> float:
    """Context only (not the baseline): one `execute` per row, a round trip each, one commit."""
    params = [tuple(r[c] for c in COLS) for r in rows.select(COLS).to_pylist()]
    sql = upsert_sql(table)
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur:
            for p in params:
                cur.execute(sql, p)
        conn.commit()
        return time.perf_counter() - started


def run_executemany(dsn: str, table: str, rows: pa.Table) -> float:
    data = rows.select(COLS).to_pylist()
    params = [tuple(r[c] for c in COLS) for r in data]
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLS[1:])
    sql = (f'INSERT INTO "{table}" ({", ".join(COLS)}) VALUES ({", ".join(["%s"] * len(COLS))}) '
           f'ON CONFLICT (event_id) DO UPDATE SET {sets} WHERE (EXCLUDED._partition, EXCLUDED._offset) > '
           f'("{table}"._partition, "{table}"._offset)')
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany(sql, params)
        conn.commit()
        return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--baseline-rows", type=int, default=100_000)
    ap.add_argument("--batch-rows", type=int, default=50_000)
    ap.add_argument("--per-row-rows", type=int, default=10_000, help="rows for the per-row context figure (0: skip)")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    db = f"flowsuite_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**PG, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    dsn = f"host={PG['host']} port={PG['port']} user={PG['user']} dbname={db}"
    url = f"postgresql+psycopg://{PG['user']}@{PG['host']}:{PG['port']}/{db}"
    results = []
    try:
        n, nb = args.rows, min(args.baseline_rows, args.rows)
        for scenario in ("insert-heavy", "update-heavy"):
            spec = bench_spec(f"sink_{scenario.split('-')[0]}")
            first = make_rows(spec, n, 0, seed=1)
            base_table = f"naive_{scenario.split('-')[0]}"
            with psycopg.connect(dsn) as conn:
                conn.execute(table_ddl(base_table))
            if scenario == "insert-heavy":
                rows = first
                baseline_rows = first.slice(0, nb)
            else:
                # Fill the tables first, then time the same keys again with higher offsets.
                run_sink(url, spec, first, args.batch_rows)
                run_executemany(dsn, base_table, first.slice(0, nb))
                rows = make_rows(spec, n, n, seed=2)
                baseline_rows = rows.slice(0, nb)
            sink_s, totals = run_sink(url, spec, rows, args.batch_rows)
            copy_s = run_copy(dsn, rows)
            naive_s = run_executemany(dsn, base_table, baseline_rows)
            per_row_rate = None
            if args.per_row_rows:
                npr = min(args.per_row_rows, n)
                pr_table = f"perrow_{scenario.split('-')[0]}"
                with psycopg.connect(dsn) as conn:
                    conn.execute(table_ddl(pr_table))
                if scenario == "update-heavy":
                    run_executemany(dsn, pr_table, first.slice(0, npr))
                per_row_rate = round(npr / run_per_row(dsn, pr_table, rows.slice(0, npr)))
            sink_rate, copy_rate, naive_rate = n / sink_s, n / copy_s, nb / naive_s
            expected_key = "inserted" if scenario == "insert-heavy" else "updated"
            assert totals[expected_key] == n, f"{scenario}: {totals}"
            results.append(
                {"scenario": scenario, "rows": n, "baseline_rows": nb, "sink_rows_per_s": round(sink_rate),
                 "copy_rows_per_s": round(copy_rate), "executemany_rows_per_s": round(naive_rate),
                 "ratio_vs_copy": round(sink_rate / copy_rate, 3), "ratio_vs_executemany": round(sink_rate / naive_rate, 2),
                 "per_row_execute_rows_per_s": per_row_rate, "counts": totals}
            )
    finally:
        with psycopg.connect(**PG, dbname="postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    print(f"\nwarehouse UPSERT on PostgreSQL, {args.rows:,} rows, batches of {args.batch_rows:,} "
          f"(executemany on {min(args.baseline_rows, args.rows):,} rows, rate extrapolated)")
    print(f"{'scenario':<14} {'sink rows/s':>12} {'COPY rows/s':>12} {'executemany':>12} {'sink/COPY':>10} {'sink/exec':>10}")
    for r in results:
        print(f"{r['scenario']:<14} {r['sink_rows_per_s']:>12,} {r['copy_rows_per_s']:>12,} {r['executemany_rows_per_s']:>12,} "
              f"{r['ratio_vs_copy']:>10.2f} {r['ratio_vs_executemany']:>10.1f}")
    load_after = os.getloadavg()[0]
    for r in results:
        if r["per_row_execute_rows_per_s"]:
            print(f"context, {r['scenario']}: one execute per row (round trip each) {r['per_row_execute_rows_per_s']:,} rows/s")
    print(f"load average {load_before:.2f} before, {load_after:.2f} after (2 shared cores: compare ratios)")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with open(out / "upsert.json", "a", encoding="utf-8") as f:
        for r in results:
            for what, ceiling, ratio, goal in (
                ("vs COPY", r["copy_rows_per_s"], r["ratio_vs_copy"], 0.5),
                ("vs executemany", r["executemany_rows_per_s"], r["ratio_vs_executemany"], 3.0),
            ):
                f.write(json.dumps({
                    "bench": "upsert", "at": now, "what": f"warehouse sink {r['scenario']} rows/s {what}",
                    "figure": r["sink_rows_per_s"], "ceiling": ceiling, "ratio": ratio, "goal": goal,
                    "met": ratio >= goal, "rows": r["rows"], "baseline_rows": r["baseline_rows"],
                    "batch_rows": args.batch_rows, "load_avg": [round(load_before, 2), round(load_after, 2)],
                    **({"baseline": "psycopg 3 cursor.executemany (pipelined), one parameter set per row"}
                       if what == "vs executemany" else {"ceiling_is": "one COPY (CSV) into an empty keyed table"}),
                    **({"per_row_execute_rows_per_s": r["per_row_execute_rows_per_s"]} if what == "vs executemany" else {}),
                }) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
