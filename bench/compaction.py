"""Benchmark: compacting an hour of 200 small landed files (not a test).

Builds one hour of 200 small files directly in the landed format (the product's lake schema,
`<topic>+<partition>+<start>.parquet`, registered committed in a metastore), then measures:
1. MB/s of `compact_hour` (sort, write, read back and verify, swap) vs a bare pyarrow
   read-all-and-write-one-file of the same files (the ceiling; goal ratio ≥ 0.7);
2. the time to read the hour (pyarrow dataset over its live files) before vs after
   compaction (goal: after ≥ 3× faster).
Prints a table and writes bench/results/compaction.json.

The machine is shared and noisy: the hour is built once and copied for each of `--repeat`
rounds; each round times the ceiling and the compaction back to back on its own copy (same
page-cache state), and the figures are the medians over rounds. CPU seconds (all threads of
this process) are reported beside wall time, and the load average is recorded.

    .venv/bin/python -m bench.compaction [--files 200] [--rows-per-file 2500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from bench.stats import print_rows, ratio_row
from connectors.flows import RunContext, compact_hour
from connectors.formats import Batch, Decoder, lake_schema
from connectors.lake import Lake, hour_dir, landed_file_name
from connectors.metastore import Metastore
from examples.demo_data import generate_clicks
from tests.support.compaction import clicks_spec

HOUR = "2026-01-10-11"


def build_hour(root: Path, files: int, rows_per_file: int):
    spec = clicks_spec("bench.clicks")
    lake = Lake(str(root / "lake"))
    metastore = Metastore(f"sqlite:///{root / 'meta.db'}")
    decoder = Decoder(spec)
    now = datetime(2026, 1, 10, 11, 59, tzinfo=UTC)
    records = list(generate_clicks(files * rows_per_file, 1, 0.0, seed=3, now=now))
    schema = lake_schema(spec)
    offset = {0: 0, 1: 0}
    for i in range(files):
        p = i % 2
        chunk = records[i * rows_per_file : (i + 1) * rows_per_file]
        batch = Batch(p, [v for _, v, _ in chunk], [k for k, _, _ in chunk],
                      list(range(offset[p], offset[p] + len(chunk))), [int(now.timestamp() * 1000)] * len(chunk))
        table = decoder.decode(batch).valid.cast(schema)
        path = f"{hour_dir(spec.name, HOUR)}/{landed_file_name(spec.topic, p, offset[p])}"
        resource = f"partition/{p}/{offset[p]}"
        metastore.register_pending(path, product=spec.name, kind="landed", hour=HOUR, claim=resource, run_id="bench",
                                   partition=p, start_offset=offset[p])
        size = lake.write_parquet(path, table)
        with metastore.engine.begin() as conn:
            from sqlalchemy import update

            from connectors.metastore import files as files_table

            conn.execute(update(files_table).where(files_table.c.path == path).values(
                state="committed", rows=table.num_rows, bytes=size, min_offset=offset[p],
                max_offset=offset[p] + len(chunk) - 1, end_offset=offset[p] + len(chunk), committed_at=time.time()))
        offset[p] += len(chunk)
    from sqlalchemy import insert

    from connectors.metastore import hours

    with metastore.engine.begin() as conn:
        conn.execute(insert(hours).values(product=spec.name, hour=HOUR, state="open", generation=0,
                                          landed_rows=files * rows_per_file, quarantined_rows=0))
    return spec, lake, metastore


def read_time(lake: Lake, paths: list[str], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        ds.dataset([lake.full(p) for p in paths], format="parquet").to_table()
        best = min(best, time.perf_counter() - t)
    return best


def one_round(base: Path, work: Path, mb: float) -> dict:
    """Ceiling then compaction on a fresh copy of the built hour."""
    shutil.copytree(base, work)
    spec = clicks_spec("bench.clicks")
    lake = Lake(str(work / "lake"))
    metastore = Metastore(f"sqlite:///{work / 'meta.db'}")
    try:
        paths = [f.path for f in metastore.live_files(spec.name, HOUR)]
        # Ceiling: bare pyarrow, read every file and write one zstd file.
        t, c = time.perf_counter(), time.process_time()
        table = pa.concat_tables([pq.read_table(lake.full(p)) for p in paths])
        pq.write_table(table, str(work / "ceiling.parquet"), compression="zstd", compression_level=1)
        ceiling_s, ceiling_cpu = time.perf_counter() - t, time.process_time() - c
        del table
        before_read = read_time(lake, paths)
        t, c = time.perf_counter(), time.process_time()
        result = compact_hour(spec, HOUR, RunContext(lake=lake, metastore=metastore, clock=datetime(2026, 1, 11, tzinfo=UTC).timestamp))
        compact_s, compact_cpu = time.perf_counter() - t, time.process_time() - c
        after_read = read_time(lake, result.files_after)
        print(f"  round: compaction {compact_s:.2f}s ({compact_cpu:.2f} CPU-s), ceiling {ceiling_s:.2f}s "
              f"({ceiling_cpu:.2f} CPU-s), ratio {ceiling_s / compact_s:.2f}; read before {before_read:.3f}s "
              f"after {after_read:.3f}s", flush=True)
        return {"compact_s": compact_s, "compact_cpu": compact_cpu, "ceiling_s": ceiling_s, "ceiling_cpu": ceiling_cpu,
                "before_read": before_read, "after_read": after_read, "result": result}
    finally:
        metastore.dispose()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--rows-per-file", type=int, default=2500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flowsuite-bench-compaction-"))
    try:
        (tmp / "base").mkdir()
        spec, lake, metastore = build_hour(tmp / "base", args.files, args.rows_per_file)
        live = metastore.live_files(spec.name, HOUR)
        paths = [f.path for f in live]
        in_bytes = sum(f.bytes for f in live)
        mb = in_bytes / 1e6
        metastore.dispose()
        load_before = os.getloadavg()
        rounds = [one_round(tmp / "base", tmp / f"round-{i}", mb) for i in range(args.repeat)]
        load_after = os.getloadavg()
        result = rounds[-1]["result"]
        med = {k: statistics.median(r[k] for r in rounds)
               for k in ("compact_s", "compact_cpu", "ceiling_s", "ceiling_cpu", "before_read", "after_read")}
        rows = [
            ratio_row("compaction throughput (MB/s of input)", [mb / r["compact_s"] for r in rounds],
                      [mb / r["ceiling_s"] for r in rounds], ">= 0.7", "MB/s",
                      cpu_s=round(med["compact_cpu"], 2), ceiling_cpu_s=round(med["ceiling_cpu"], 2),
                      cpu_ratio=round(med["ceiling_cpu"] / med["compact_cpu"], 2)),
            ratio_row("read the hour (s), after vs before", [r["after_read"] for r in rounds],
                      [r["before_read"] for r in rounds], ">= 3x faster", "s",
                      ratios=[r["before_read"] / r["after_read"] for r in rounds]),
        ]
        print(f"hour {HOUR}: {len(paths)} files, {result.rows} rows, {mb:.1f} MB → {len(result.files_after)} file(s), "
              f"{result.bytes_after / 1e6:.1f} MB")
        print_rows(rows)
        out = Path(__file__).resolve().parent / "results" / "compaction.json"
        out.parent.mkdir(exist_ok=True)
        print(f"medians over {args.repeat} rounds; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
              f"(2 shared cores: compare the ratio, not the absolute figures)")
        out.write_text(json.dumps({"files": len(paths), "rows": result.rows, "input_mb": round(mb, 2),
                                   "repeat": args.repeat, "load_avg": [round(load_before[0], 2), round(load_after[0], 2)],
                                   "results": rows}, indent=1))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
