"""Benchmark: publishing sealed hours as an Iceberg table, and reading a day through it (not a test).

Builds `--hours` hours of `--files` small landed files each (the landed format, registered in
a metastore, as bench/compaction.py does), then per hour: compacts it (closed → sealed) and
publishes it (`publish_sealed_hours`: queue, refresh, footers read, one snapshot committed).
Measures:
1. publishing cost per sealed hour in ms, and as a fraction of that hour's compaction time
   (goal ≤ 10%), medians over the hours; also the republish (overwrite) of one hour;
2. reading the whole day through pyiceberg's scan vs pyarrow reading the same live files the
   metastore lists (the ceiling; goal ratio ≥ 0.8), best of `--repeat`.
Prints a table and writes bench/results/iceberg.json.

    .venv/bin/python -m bench.iceberg [--hours 24] [--files 40] [--rows-per-file 2500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.dataset as ds
from sqlalchemy import insert, update

from connectors.flows import RunContext, compact_hour
from connectors.formats import Batch, Decoder, lake_schema
from connectors.lake import Lake, hour_dir, hour_key, landed_file_name
from connectors.metastore import Metastore, files, hours
from connectors.tables import IcebergTables, publish_sealed_hours
from examples.demo_data import generate_clicks
from tests.support.compaction import clicks_spec

DAY = datetime(2026, 1, 10, tzinfo=UTC)
LATER = DAY + timedelta(days=2)  # every hour closed


def build_hours(root: Path, n_hours: int, n_files: int, rows_per_file: int):
    spec = clicks_spec("bench.clicks")  # clicks.yaml: sinks.lake.iceberg.enabled
    lake, metastore = Lake(str(root / "lake")), Metastore(f"sqlite:///{root / 'meta.db'}")
    decoder, schema = Decoder(spec), lake_schema(spec)
    offset = {0: 0, 1: 0}
    keys = []
    for h in range(n_hours):
        end = DAY + timedelta(hours=h, minutes=59)
        key = hour_key(DAY + timedelta(hours=h))
        keys.append(key)
        records = list(generate_clicks(n_files * rows_per_file, 1, 0.0, seed=h, now=end))
        for i in range(n_files):
            p = i % 2
            chunk = records[i * rows_per_file:(i + 1) * rows_per_file]
            batch = Batch(p, [v for _, v, _ in chunk], [k for k, _, _ in chunk],
                          list(range(offset[p], offset[p] + len(chunk))), [int(end.timestamp() * 1000)] * len(chunk))
            table = decoder.decode(batch).valid.cast(schema)
            path = f"{hour_dir(spec.name, key)}/{landed_file_name(spec.topic, p, offset[p])}"
            metastore.register_pending(path, product=spec.name, kind="landed", hour=key, claim=f"partition/{p}/{offset[p]}",
                                       run_id="bench", partition=p, start_offset=offset[p])
            size = lake.write_parquet(path, table)
            with metastore.engine.begin() as conn:
                conn.execute(update(files).where(files.c.path == path).values(
                    state="committed", rows=table.num_rows, bytes=size, min_offset=offset[p],
                    max_offset=offset[p] + len(chunk) - 1, end_offset=offset[p] + len(chunk), committed_at=time.time()))
            offset[p] += len(chunk)
        with metastore.engine.begin() as conn:
            conn.execute(insert(hours).values(product=spec.name, hour=key, state="open", generation=0,
                                              landed_rows=n_files * rows_per_file, quarantined_rows=0))
    return spec, lake, metastore, keys


def best_of(fn, repeat: int) -> tuple[float, int]:
    best, rows = float("inf"), 0
    for _ in range(repeat):
        t = time.perf_counter()
        rows = fn().num_rows
        best = min(best, time.perf_counter() - t)
    return best, rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--rows-per-file", type=int, default=2500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "iceberg.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flowsuite-bench-iceberg-"))
    try:
        spec, lake, metastore, keys = build_hours(tmp, args.hours, args.files, args.rows_per_file)
        tables = IcebergTables(str(metastore.engine.url), lake)
        tables.ensure_table(spec, spec.sinks.lake.iceberg.retain)  # created once, not timed
        load_before = os.getloadavg()
        compact_s, publish_s = [], []
        run = RunContext(lake=lake, metastore=metastore, clock=LATER.timestamp)
        for key in keys:
            t = time.perf_counter()
            compact_hour(spec, key, run)
            compact_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables, expire_after=False)
            publish_s.append(time.perf_counter() - t)
            assert [p["hour"] for p in r.published] == [key], r.published
        # a reopened hour's new generation: compaction, then the overwrite snapshot
        t = time.perf_counter()
        compact_hour(spec, keys[0], run, force=True)
        recompact = time.perf_counter() - t
        t = time.perf_counter()
        r = publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables, expire_after=False)
        republish = time.perf_counter() - t
        assert r.published[0]["operation"] == "overwrite"

        live = [lake.full(f.path) for f in metastore.live_files(spec.name)]
        direct_s, direct_rows = best_of(lambda: ds.dataset(live, format="parquet").to_table(), args.repeat)
        iceberg_s, iceberg_rows = best_of(lambda: tables.scan(spec.name), args.repeat)
        assert direct_rows == iceberg_rows, (direct_rows, iceberg_rows)
        load_after = os.getloadavg()

        med_c, med_p = statistics.median(compact_s), statistics.median(publish_s)
        rows = [
            {"what": "publish one sealed hour (ms)", "figure": round(med_p * 1000, 1), "ceiling": round(med_c * 1000, 1),
             "ratio": round(med_p / med_c, 3), "goal": "<= 0.10 of the hour's compaction",
             "max_ms": round(max(publish_s) * 1000, 1)},
            {"what": "republish a reopened hour, overwrite (ms)", "figure": round(republish * 1000, 1),
             "ceiling": round(recompact * 1000, 1), "ratio": round(republish / recompact, 3), "goal": "<= 0.10"},
            {"what": f"read {args.hours} h through pyiceberg vs pyarrow on the live files (s)", "figure": round(iceberg_s, 3),
             "ceiling": round(direct_s, 3), "ratio": round(direct_s / iceberg_s, 2), "goal": ">= 0.8"},
        ]
        print(f"{args.hours} hours x {args.files} files x {args.rows_per_file} rows = {iceberg_rows:,} rows; "
              f"compaction median {med_c:.2f} s per hour")
        print(f"{'what':62} {'figure':>9} {'ceiling':>9} {'ratio':>7}  goal")
        for r in rows:
            print(f"{r['what']:62} {r['figure']:>9} {r['ceiling']:>9} {r['ratio']:>7}  {r['goal']}")
        print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (2 shared cores: compare ratios)")
        out = Path(args.out)
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({
            "bench": "iceberg", "hours": args.hours, "files_per_hour": args.files, "rows": iceberg_rows,
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
            "load_avg": [round(load_before[0], 2), round(load_after[0], 2)],
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows_table": rows,
        }, indent=1) + "\n")
        tables.dispose()
        metastore.dispose()
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
