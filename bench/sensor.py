"""Offset-sensor tick time for 10 data products x 12 partitions, against a bare watermark loop.

    python bench/sensor.py [--products 10] [--partitions 12] [--repeat 3]

Builds 10 specs (the demo clicks spec on 10 topics of 12 partitions each) on an embedded
Tansu broker, lands what is there, and times each product's real sensor function evaluated
with `dg.build_sensor_context` — once when nothing waits (the steady state) and once when
records wait in every partition (the tick requests a run). The ceiling is the least any tick
must do: a bare `get_watermark_offsets` loop over the same 120 partitions with one consumer.
Writes bench/results/sensor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from connectors.flows import land  # noqa: E402
from connectors.kafka import ensure_topic  # noqa: E402
from connectors.spec import parse_spec_file  # noqa: E402
from examples.demo_data import generate_clicks, produce  # noqa: E402
from orchestration.jobs import ingest_job  # noqa: E402
from orchestration.resources import FlowsuiteResource  # noqa: E402
from orchestration.services.broker import running_broker  # noqa: E402
from sensors.offsets import build_offset_sensor  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def _machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def bare_watermarks(bootstrap: str, topics: list[str], partitions: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-bare"})
    try:
        consumer.list_topics(timeout=10)  # connected before the clock starts
        started = time.perf_counter()
        for t in topics:
            for p in range(partitions):
                consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10, cached=False)
        return time.perf_counter() - started
    finally:
        consumer.close()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--products", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3, help="best of N")
    args = ap.parse_args()
    base = parse_spec_file(ROOT / "dataproducts" / "clicks.yaml")
    rows = []
    with running_broker() as broker, tempfile.TemporaryDirectory(prefix="bench-sensor-") as tmp:
        bootstrap = broker.bootstrap
        specs, sensors, resources = [], [], []
        for i in range(args.products):
            topic = f"bench-sensor-{os.getpid()}-{i}"
            ensure_topic(bootstrap, topic, args.partitions)
            spec = base.model_copy(update={"name": f"product_{i}", "topic": topic})
            produce(
                bootstrap,
                topic,
                generate_clicks(100 * args.partitions, 2, 0.0, seed=i),
                partitions=args.partitions,
            )
            resource = FlowsuiteResource(
                kafka_bootstrap=bootstrap,
                lake_url=f"{tmp}/lake",
                metastore_url=f"sqlite:///{tmp}/meta.db",
                warehouse_url=f"sqlite:///{tmp}/wh.db",
            )
            land(
                spec,
                lake=resource.lake(),
                metastore=resource.metastore(),
                bootstrap=bootstrap,
                idle_timeout_s=10,
            )
            job = ingest_job(spec, [dg.AssetKey([spec.name, "landed"])])
            specs.append(spec)
            sensors.append(build_offset_sensor(spec, job))
            resources.append(resource)
        topics = [s.topic for s in specs]

        def tick_all(instance) -> tuple[float, int]:
            started = time.perf_counter()
            requested = 0
            for sensor, resource in zip(sensors, resources, strict=True):
                result = sensor(
                    dg.build_sensor_context(instance=instance, resources={"flowsuite": resource})
                )
                requested += len(getattr(result, "run_requests", None) or [])
            return time.perf_counter() - started, requested

        with dg.instance_for_test() as instance:
            tick_all(instance)  # warm: engines, connections
            idle = min(tick_all(instance)[0] for _ in range(args.repeat))
            for spec in specs:  # records now wait in every partition
                produce(
                    bootstrap,
                    spec.topic,
                    generate_clicks(2000, 1, 0.0, seed=99),
                    partitions=args.partitions,
                )
            waits = [tick_all(instance) for _ in range(args.repeat)]
            waiting = min(t for t, _ in waits)
            assert all(n == args.products for _, n in waits), waits
        ceiling = min(
            bare_watermarks(bootstrap, topics, args.partitions) for _ in range(args.repeat)
        )
    n = args.products * args.partitions
    label = f"{args.products} products x {args.partitions} partitions"
    rows.append(
        {
            "what": f"sensor ticks, nothing waiting ({label})",
            "figure": idle,
            "ceiling": ceiling,
            "ratio": idle / ceiling,
            "goal": "<= 5 s",
            "unit": "s",
        }
    )
    rows.append(
        {
            "what": f"sensor ticks, records waiting ({label})",
            "figure": waiting,
            "ceiling": ceiling,
            "ratio": waiting / ceiling,
            "goal": "<= 5 s",
            "unit": "s",
        }
    )
    print(f"{'what':<58} {'figure s':>9} {'ceiling s':>9} {'ratio':>7}")
    for r in rows:
        print(f"{r['what']:<58} {r['figure']:>9.3f} {r['ceiling']:>9.3f} {r['ratio']:>7.1f}")
    print(
        f"({n} partitions; ceiling: a bare get_watermark_offsets loop over them; goal: all ticks well inside "
        f"the 30 s default interval)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sensor.json").write_text(
        json.dumps(
            {"bench": "sensor", "partitions": n, "machine": _machine(), "rows": rows}, indent=2
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
