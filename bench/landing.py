"""Landing throughput against a bare consume loop over the same topic, in the same run.

    python -m bench.landing [--events 1000000] [--partitions 1] [--invalid-rate 0]
                            [--parallel] [--s3] [--rounds 3] [--scale]

Produces click events into a fresh topic on an embedded Tansu broker, then measures:
- the ceiling: a bare `consume(num_messages=…)` loop over every partition with `assign()`,
  touching each message's value (what any consumer must do at least);
- the minimal pipeline (the ceiling landing is held to, goal >= 0.8): consume, pyarrow's JSON
  reader per batch, one Parquet writer per event hour, no validation, offsets or guarantees —
  the bare loop stays as a reference row without a goal (no JSON decoder reaches it);
- landing: `connectors.flows.landing.land` over the same topic into a fresh local lake and
  SQLite metastore (decode, validate, Parquet per hour, commit);
- with --parallel: one landing process per Kafka partition at once (what the multiprocess
  executor does with per-partition steps) vs the single-step landing above;
- with --s3: the same landing into an S3 lake on moto's server vs the local lake;
- with --scale: one landing step over every partition (run with --partitions 12) in a child
  process on both cores and pinned to one core (sched_setaffinity, as `taskset -c 0`), with
  its throughput and peak RSS, beside a bare loop in a child process under the same pinning.

Every ratio is measured in `--rounds` interleaved rounds (figure and ceiling back to back,
order alternated each round) and printed with min / median / max; the median is judged.
Absolute figures drift on shared machines; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from bench.stats import print_rows, ratio_row
from connectors.flows import land
from connectors.kafka import consumer_config, relaxed_gc
from connectors.lake import Lake, S3Options
from connectors.metastore import Metastore
from connectors.spec import parse_spec_file
from examples.demo_data import generate_clicks, produce
from orchestration.services.broker import running_broker

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "bench" / "results"


def bare_consume(bootstrap: str, topic: str, partitions: int, expected: int) -> float:
    """Seconds to read every record once with the fastest plain loop: the landing's consumer
    settings and, as landing has, the cyclic GC out of the loop (connectors.kafka.relaxed_gc)."""
    conf = consumer_config(bootstrap, "bench-bare")
    consumer = Consumer(conf)
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        seen, eof = 0, set()
        with relaxed_gc():
            started = time.perf_counter()
            while len(eof) < partitions:
                for msg in consumer.consume(num_messages=10_000, timeout=0.05):
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            eof.add(msg.partition())
                        continue
                    msg.value()
                    seen += 1
            elapsed = time.perf_counter() - started
    finally:
        consumer.close()
    if seen != expected:
        raise SystemExit(f"bare loop read {seen} records, expected {expected}")
    return elapsed


def minimal_pipeline(bootstrap: str, topic: str, partitions: int, expected: int, out: Path) -> float:
    """The honest ceiling of a landing: consume, parse each batch with pyarrow's JSON reader,
    one Parquet writer per event hour — no validation, no quarantine, no offsets, no commit, no
    guarantees. Seconds for every record once; the same consumer settings and GC handling as landing."""
    import io

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    schema = pa.schema([("event_id", pa.string()), ("user_id", pa.string()), ("partner_id", pa.string()),
                        ("ad_id", pa.string()), ("kind", pa.string()), ("cost_micros", pa.int64()),
                        ("event_time", pa.timestamp("ms", tz="UTC"))])
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    out.mkdir(parents=True, exist_ok=True)
    writers: dict[int, pq.ParquetWriter] = {}
    consumer = Consumer(consumer_config(bootstrap, "bench-minimal"))
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        seen, eof = 0, set()
        with relaxed_gc():
            started = time.perf_counter()
            while len(eof) < partitions:
                values = []
                for msg in consumer.consume(num_messages=10_000, timeout=0.05):
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            eof.add(msg.partition())
                        continue
                    values.append(msg.value())
                if not values:
                    continue
                seen += len(values)
                table = pajson.read_json(io.BytesIO(b"\n".join(values)), parse_options=parse)
                hours = pc.divide(table.column("event_time").cast(pa.int64()), 3_600_000)
                for hour in pc.unique(hours).to_pylist():
                    part = table.filter(pc.equal(hours, hour))
                    if hour not in writers:
                        writers[hour] = pq.ParquetWriter(out / f"{hour}.parquet", schema)
                    writers[hour].write_table(part)
            for w in writers.values():
                w.close()
            elapsed = time.perf_counter() - started
    finally:
        consumer.close()
    if seen != expected:
        raise SystemExit(f"minimal pipeline read {seen} records, expected {expected}")
    return elapsed


def land_once(spec, bootstrap: str, lake_url: str, partitions: list[int] | None = None, s3=None) -> tuple[float, int]:
    home = Path(tempfile.mkdtemp(prefix="bench-ms-"))
    try:
        metastore = Metastore(f"sqlite:///{home / 'metastore.db'}")
        lake = Lake(lake_url, s3)
        started = time.perf_counter()
        result = land(spec, lake=lake, metastore=metastore, bootstrap=bootstrap, partitions=partitions,
                      max_records=10**9)
        elapsed = time.perf_counter() - started
        assert result.consumed == result.landed + result.quarantined
        return elapsed, result.consumed
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _land_partition(args) -> tuple[float, int]:
    spec_json, bootstrap, lake_url, partition, metastore_url = args
    from connectors.spec import DataProductSpec

    spec = DataProductSpec.model_validate_json(spec_json)
    started = time.perf_counter()
    result = land(spec, lake=Lake(lake_url), metastore=Metastore(metastore_url), bootstrap=bootstrap,
                  partitions=[partition], max_records=10**9)
    return time.perf_counter() - started, result.consumed


def _warm(_: int) -> int:
    """Import the landing stack in a pool process, off the clock (a step process is warm too)."""
    import connectors.flows.landing  # noqa: F401

    time.sleep(0.2)  # keep this worker busy so the next warm-up lands on another one
    return os.getpid()


def land_parallel(spec, bootstrap: str, partitions: int) -> tuple[float, int]:
    home = Path(tempfile.mkdtemp(prefix="bench-par-"))
    try:
        metastore_url = f"sqlite:///{home / 'metastore.db'}"
        Metastore(metastore_url)  # create tables once
        jobs = [(spec.model_dump_json(), bootstrap, str(home / "lake"), p, metastore_url) for p in range(partitions)]
        ctx = mp.get_context("spawn")
        with ctx.Pool(partitions) as pool:
            pool.map(_warm, range(partitions), chunksize=1)  # the pool's imports, off the clock
            started = time.perf_counter()
            results = pool.map(_land_partition, jobs)
            elapsed = time.perf_counter() - started
        return elapsed, sum(n for _, n in results)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--hours", type=int, default=6)
    parser.add_argument("--invalid-rate", type=float, default=0.0)
    parser.add_argument("--parallel", action="store_true", help="also land one process per partition")
    parser.add_argument("--s3", action="store_true", help="also land into S3 (moto server)")
    parser.add_argument("--rounds", "--repeat", type=int, default=3, dest="rounds",
                        help="interleaved rounds (ratio min / median / max)")
    parser.add_argument("--scale", action="store_true",
                        help="one landing step over all partitions on all cores and on one core, with peak RSS")
    args = parser.parse_args()
    if args.partitions >= 2 and not args.scale:
        args.parallel = True

    spec = parse_spec_file(ROOT / "dataproducts" / "clicks.yaml")
    topic = f"bench-clicks-{os.getpid()}"
    spec = spec.model_copy(update={"topic": topic})
    rows: list[dict] = []
    with running_broker() as broker:
        bootstrap = broker.bootstrap
        report = produce(bootstrap, topic, generate_clicks(args.events, args.hours, args.invalid_rate, seed=7),
                         partitions=args.partitions)
        print(f"produced {report.produced:,} events into {topic} ({args.partitions} partition(s))", flush=True)

        n = report.produced
        lake_root = Path(tempfile.mkdtemp(prefix="bench-lake-"))
        bare, landing, par, minimal = [], [], [], []
        try:
            for i in range(args.rounds):
                # Rotate which goes first: none always gets the warmer cache.
                steps = [("bare", lambda: bare_consume(bootstrap, topic, args.partitions, n)),
                         ("land", lambda i=i: land_once(spec, bootstrap, str(lake_root / f"lake{i}"))[0]),
                         ("minimal", lambda i=i: minimal_pipeline(bootstrap, topic, args.partitions, n,
                                                                  lake_root / f"minimal{i}"))]
                for what, fn in steps[i % 3:] + steps[:i % 3]:
                    {"bare": bare, "land": landing, "minimal": minimal}[what].append(fn())
                if args.parallel and args.partitions >= 2:
                    par.append(land_parallel(spec, bootstrap, args.partitions)[0])
                print(f"  round {i + 1}: bare {n / bare[-1]:,.0f}/s, minimal {n / minimal[-1]:,.0f}/s, "
                      f"landing {n / landing[-1]:,.0f}/s"
                      + (f", parallel {n / par[-1]:,.0f}/s" if par else ""), flush=True)
        finally:
            shutil.rmtree(lake_root, ignore_errors=True)
        # The bare loop only touches bytes (no JSON decoder reaches it): kept as a reference row,
        # judged against nothing; the minimal pipeline is the ceiling a landing can be held to.
        rows.append(ratio_row("landing vs bare consume loop (bytes only)", [n / t for t in landing],
                              [n / t for t in bare], None, "records/s"))
        rows.append(ratio_row("landing vs minimal pipeline (consume, pyarrow JSON, Parquet per hour)",
                              [n / t for t in landing], [n / t for t in minimal], ">= 0.8", "records/s"))
        if par:
            rows.append(ratio_row(f"parallel landing ({args.partitions} steps) vs one step", [n / t for t in par],
                                  [n / t for t in landing], ">= 1.6", "records/s"))

        if args.s3:
            from moto.server import ThreadedMotoServer

            from orchestration.services.broker import free_port

            port = free_port()
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            try:
                import boto3

                endpoint = f"http://127.0.0.1:{port}"
                boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                             aws_secret_access_key="x").create_bucket(Bucket="bench")
                s3 = S3Options(endpoint_url=endpoint, region="us-east-1", access_key_id="x", secret_access_key="x")
                s3_times, local_times = [], []
                local_root = Path(tempfile.mkdtemp(prefix="bench-lake-"))
                try:
                    for i in range(args.rounds):
                        s3_times.append(land_once(spec, bootstrap, f"s3://bench/lake{i}", s3=s3)[0])
                        local_times.append(land_once(spec, bootstrap, str(local_root / f"lake{i}"))[0])
                finally:
                    shutil.rmtree(local_root, ignore_errors=True)
                rows.append(ratio_row("S3 lake (moto) vs local lake", [n / t for t in s3_times],
                                      [n / t for t in local_times], None, "records/s"))
            finally:
                server.stop()

        if args.scale:
            rows += scale_rows(spec, bootstrap, topic, args.partitions, n, args.rounds)

    print()
    print_rows(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "landing.json" if args.partitions == 1 else f"landing-p{args.partitions}.json"
    (RESULTS / name).write_text(json.dumps({"bench": "landing", "events": n, "rounds": args.rounds,
                                            "machine": _machine(), "rows": rows}, indent=2))


# --- scale: one step over many partitions, on 2 cores and on 1 --------------------------------


def _child(args) -> dict:
    """In a fresh process: pin to `cores`, run `what` (bare loop or landing), report time and peak RSS."""
    what, cores, spec_json, bootstrap, topic, partitions, expected = args
    if cores:
        os.sched_setaffinity(0, cores)
    from connectors.spec import DataProductSpec

    spec = DataProductSpec.model_validate_json(spec_json)
    import connectors.flows.landing  # noqa: F401  (imports off the clock, as in a warm step process)

    rss_before = _peak_rss_mb()
    if what == "bare":
        took = bare_consume(bootstrap, topic, partitions, expected)
    else:
        took, consumed = land_once(spec, bootstrap, tempfile.mkdtemp(prefix="bench-scale-"))
        assert consumed == expected, (consumed, expected)
    return {"s": took, "rss_mb": _peak_rss_mb(), "rss_before_mb": rss_before}


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux carries that across
    fork and exec, so a spawned child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scale_rows(spec, bootstrap: str, topic: str, partitions: int, n: int, rounds: int) -> list[dict]:
    """Landing over every partition in one step, on all cores and pinned to one (each in a fresh
    spawned process, so the peak RSS is the step's own), against a bare loop under the same pinning."""
    ctx = mp.get_context("spawn")
    cpus = sorted(os.sched_getaffinity(0))
    out = []
    for label, cores in ((f"{len(cpus)} cores", None), ("1 core (pinned)", {cpus[0]})):
        lands, bares = [], []
        for i in range(rounds):
            order = ["bare", "land"] if i % 2 == 0 else ["land", "bare"]
            for what in order:
                with ctx.Pool(1) as pool:
                    r = pool.apply(_child, ((what, cores, spec.model_dump_json(), bootstrap, topic, partitions, n),))
                (bares if what == "bare" else lands).append(r)
            print(f"  scale {label} round {i + 1}: landing {n / lands[-1]['s']:,.0f}/s "
                  f"(peak RSS {lands[-1]['rss_mb']:.0f} MB), bare {n / bares[-1]['s']:,.0f}/s", flush=True)
        out.append(ratio_row(f"landing {partitions} partitions, one step, {label}, vs bare loop",
                             [n / r["s"] for r in lands], [n / r["s"] for r in bares], None, "records/s",
                             peak_rss_mb=max(r["rss_mb"] for r in lands),
                             rss_after_imports_mb=max(r["rss_before_mb"] for r in lands),
                             bare_peak_rss_mb=max(r["rss_mb"] for r in bares)))
    return out


def _machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
