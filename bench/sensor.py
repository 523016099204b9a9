"""Offset-sensor tick time for 10 and 100 data products x 12 partitions, against a bare watermark loop.

    python -m bench.sensor [--products 10,100] [--partitions 12] [--rounds 3]

For each product count: builds that many specs (the demo clicks spec on topics of 12
partitions each) on an embedded Tansu broker, lands what is there, and times one tick of every
product's real sensor function evaluated with `dg.build_sensor_context` — when nothing waits
(the steady state) and when records wait in every partition (the tick requests a run). The
ceiling is the least any tick must do: a bare `get_watermark_offsets` loop over the same
partitions with one consumer. Rounds are interleaved (ticks, then ceiling, each round) and each
figure is printed with min / median / max; the goal is on the tick time itself. With
`--prototype`, bench/sensor_probe.py's tick is timed in the same rounds and its decisions are
checked equal to the real sensor's. Writes bench/results/sensor.json.
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

import dagster as dg
from confluent_kafka import Consumer, TopicPartition

from bench.stats import print_rows, ratio_row
from connectors.flows import land
from connectors.kafka import ensure_topic
from connectors.spec import parse_spec_file
from examples.demo_data import generate_clicks, produce
from orchestration.jobs import ingest_job
from orchestration.resources import FlowsuiteResource
from orchestration.services.broker import running_broker
from sensors.offsets import build_offset_sensor

ROOT = Path(__file__).resolve().parent.parent
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


def setup_products(broker, tmp: str, count: int, partitions: int, base, tag: str):
    bootstrap = broker.bootstrap
    specs, sensors, resources = [], [], []
    resource = FlowsuiteResource(
        kafka_bootstrap=bootstrap,
        lake_url=f"{tmp}/lake-{tag}",
        metastore_url=f"sqlite:///{tmp}/meta-{tag}.db",
        warehouse_url=f"sqlite:///{tmp}/wh-{tag}.db",
    )
    for i in range(count):
        topic = f"bench-sensor-{os.getpid()}-{tag}-{i}"
        ensure_topic(bootstrap, topic, partitions)
        spec = base.model_copy(update={"name": f"product_{tag}_{i}", "topic": topic})
        produce(bootstrap, topic, generate_clicks(100 * partitions, 2, 0.0, seed=i), partitions=partitions)
        land(spec, lake=resource.lake(), metastore=resource.metastore(), bootstrap=bootstrap, idle_timeout_s=10)
        job = ingest_job(spec, [dg.AssetKey([spec.name, "landed"])])
        specs.append(spec)
        sensors.append((build_offset_sensor(spec, job), job.name))
        resources.append(resource)
    return specs, sensors, resources


def tick_all(instance, specs, sensors, resources) -> tuple[float, int]:
    """One tick of every product's sensor: seconds, runs requested."""
    started = time.perf_counter()
    requested = 0
    for (sensor, _), resource in zip(sensors, resources, strict=True):
        result = sensor(dg.build_sensor_context(instance=instance, resources={"flowsuite": resource}))
        requested += len(getattr(result, "run_requests", None) or [])
    return time.perf_counter() - started, requested


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--products", default="10,100", help="product counts, comma-separated")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--rounds", "--repeat", type=int, default=3, dest="rounds", help="interleaved rounds")
    args = ap.parse_args()
    base = parse_spec_file(ROOT / "dataproducts" / "clicks.yaml")
    rows = []
    with running_broker() as broker, tempfile.TemporaryDirectory(prefix="bench-sensor-") as tmp:
        bootstrap = broker.bootstrap
        for count in [int(c) for c in args.products.split(",")]:
            specs, sensors, resources = setup_products(broker, tmp, count, args.partitions, base, f"n{count}")
            topics = [s.topic for s in specs]

            label = f"{count} products x {args.partitions} partitions"
            with dg.instance_for_test() as instance:
                tick_all(instance, specs, sensors, resources)  # warm: engines, connections
                for state in ("nothing waiting", "records waiting"):
                    if state == "records waiting":
                        for spec in specs:
                            produce(bootstrap, spec.topic, generate_clicks(2000, 1, 0.0, seed=99),
                                    partitions=args.partitions)
                    times, ceilings = [], []
                    for r in range(args.rounds):
                        # Alternate which goes first: neither always gets the warmer broker.
                        if r % 2:
                            ceilings.append(bare_watermarks(bootstrap, topics, args.partitions))
                        took, requested = tick_all(instance, specs, sensors, resources)
                        if not r % 2:
                            ceilings.append(bare_watermarks(bootstrap, topics, args.partitions))
                        want = count if state == "records waiting" else 0
                        assert requested == want, (state, requested, want)
                        times.append(took)
                        print(f"  {label}, {state}, round {r + 1}: ticks {took:.3f} s, ceiling {ceilings[-1]:.4f} s",
                              flush=True)
                    goal = "<= 0.5 s" if count <= 10 else "<= 5 s"
                    rows.append(ratio_row(f"sensor ticks, {state} ({label})", times, ceilings, goal, "s",
                                          products=count, partitions=count * args.partitions))
    print()
    print_rows(rows)
    print("(figure: one tick of every product, s; ceiling: a bare get_watermark_offsets loop over the same "
          "partitions; ratio = figure / ceiling, lower is better; the goal is on the figure)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sensor.json").write_text(
        json.dumps({"bench": "sensor", "rounds": args.rounds, "machine": _machine(), "rows": rows}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
