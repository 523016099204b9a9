"""Produce-to-lake freshness: how long a record waits between its produce and the commit of the
landing that holds it, under the default sensor interval (30 s) and a short one (5 s).

    python -m bench.freshness [--rate 500] [--duration 120] [--intervals 30,5]

A producer thread sends demo clicks at a steady rate to a topic of an embedded Tansu broker.
The offset sensor (`sensors/offsets.py`, the real function, with the demo spec's trigger:
min_records 1000, max_latency 2m) is ticked every `interval` seconds, as the daemon would;
when it requests a run, the landing runs right then (a real `land` into a local lake), and
each landed record's freshness is the commit time minus its Kafka timestamp (set at produce).
No daemon runs: run queueing and process start-up add to these figures in production.
Reports p50/p95/max per interval; the ceiling is the interval itself (a record produced just
after a tick waits a full interval). Writes bench/results/freshness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Producer

from connectors.flows import land
from connectors.kafka import ensure_topic
from connectors.spec import parse_spec_file
from examples.demo_data import generate_clicks
from orchestration.jobs import ingest_job
from orchestration.resources import FlowsuiteResource
from orchestration.services.broker import running_broker
from sensors.offsets import build_offset_sensor

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "bench" / "results"


def _machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def measure(bootstrap: str, interval: float, rate: int, duration: float, tmp: str) -> dict:
    base = parse_spec_file(ROOT / "dataproducts" / "clicks.yaml")
    topic = f"bench-fresh-{os.getpid()}-{int(interval)}"
    ensure_topic(bootstrap, topic, 2)
    spec = base.model_copy(
        update={
            "topic": topic,
            "trigger": base.trigger.model_copy(
                update={"sensor_interval": timedelta(seconds=interval)}
            ),
        }
    )
    resource = FlowsuiteResource(
        kafka_bootstrap=bootstrap,
        lake_url=f"{tmp}/lake-{int(interval)}",
        metastore_url=f"sqlite:///{tmp}/meta-{int(interval)}.db",
        warehouse_url=f"sqlite:///{tmp}/wh.db",
    )
    sensor = build_offset_sensor(spec, ingest_job(spec, [dg.AssetKey([spec.name, "landed"])]))
    stop = threading.Event()

    records = list(
        generate_clicks(int(rate * (duration + interval + 5)), 1, 0.0, seed=int(interval))
    )

    def producer() -> None:
        # One long-lived producer, paced in 10 bursts a second; the Kafka timestamp is set
        # when each record is handed to the client.
        client = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        burst, i = max(1, rate // 10), 0
        try:
            while not stop.is_set() and i < len(records):
                started = time.monotonic()
                for key, value, _ in records[i : i + burst]:
                    client.produce(topic, value=value, key=key)
                i += burst
                client.poll(0)
                stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))
        finally:
            client.flush(10)

    freshness: list[np.ndarray] = []
    landings: list[float] = []
    thread = threading.Thread(target=producer, daemon=True)
    with dg.instance_for_test() as instance:
        thread.start()
        began = time.monotonic()
        cursor = None
        next_tick = began + interval
        while time.monotonic() - began < duration:
            time.sleep(max(0.0, next_tick - time.monotonic()))
            next_tick += interval
            result = sensor(
                dg.build_sensor_context(
                    instance=instance, cursor=cursor, resources={"flowsuite": resource}
                )
            )
            cursor = getattr(result, "cursor", None) or cursor
            if not getattr(result, "run_requests", None):
                continue
            started = time.monotonic()
            landed = land(
                spec,
                lake=resource.lake(),
                metastore=resource.metastore(),
                bootstrap=bootstrap,
                idle_timeout_s=10,
            )
            committed_ms = time.time() * 1000
            landings.append(time.monotonic() - started)
            if landed.files:
                ts = (
                    resource.lake()
                    .read_tables(landed.files, columns=["_timestamp"])
                    .column("_timestamp")
                )
                ms = pc.cast(pc.cast(ts, pa.timestamp("ms", tz="UTC")), pa.int64()).to_numpy(
                    zero_copy_only=False
                )
                freshness.append((committed_ms - ms) / 1000)
        stop.set()
        thread.join()
    values = np.concatenate(freshness) if freshness else np.array([np.nan])
    return {
        "interval_s": interval,
        "records": int(values.size),
        "landings": len(landings),
        "landing_s_mean": float(np.mean(landings)) if landings else None,
        "p50_s": float(np.percentile(values, 50)),
        "p95_s": float(np.percentile(values, 95)),
        "max_s": float(np.max(values)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rate", type=int, default=500, help="records per second")
    ap.add_argument("--duration", type=float, default=150, help="seconds of traffic per interval")
    ap.add_argument("--intervals", default="30,5", help="sensor intervals to compare, seconds")
    args = ap.parse_args()
    runs = []
    with running_broker() as broker, tempfile.TemporaryDirectory(prefix="bench-fresh-") as tmp:
        for interval in [float(x) for x in args.intervals.split(",")]:
            duration = max(args.duration, 3 * interval + 1)
            run = measure(broker.bootstrap, interval, args.rate, duration, tmp)
            runs.append(run)
            print(
                f"interval {interval:>4.0f} s: {run['records']:,} records in {run['landings']} landing(s); "
                f"freshness p50 {run['p50_s']:.1f} s, p95 {run['p95_s']:.1f} s, max {run['max_s']:.1f} s",
                flush=True,
            )
    rows = []
    for run in runs:
        i = run["interval_s"]
        for q in ("p50", "p95"):
            rows.append(
                {
                    "what": f"produce-to-lake freshness {q}, sensor every {i:.0f} s",
                    "figure": run[f"{q}_s"],
                    "ceiling": i,
                    "ratio": run[f"{q}_s"] / i,
                    "goal": f"<= {i:.0f} s + landing" if q == "p95" else f"~{i / 2:.0f} s",
                    "unit": "s",
                }
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "freshness.json").write_text(
        json.dumps(
            {
                "bench": "freshness",
                "rate": args.rate,
                "machine": _machine(),
                "runs": runs,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
