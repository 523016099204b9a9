"""CLI subcommands of landing: `land`, `demo`, `offsets show`, `offsets reset`.

Registered on import by `orchestration/cli.py`.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext

from orchestration.cli import CliError, _interactive, _positive, _rate, arg, command, product_spec
from orchestration.settings import Settings


def _status(message: str):
    if not _interactive():
        return nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message)


@command(
    "land",
    help="land a data product now: run its <product>_ingest job (recorded in DAGSTER_HOME)",
    args=[
        arg("product", help="data product name, e.g. clicks"),
        arg("--partition", type=int, action="append", dest="partitions", help="only this Kafka partition (repeatable)"),
        arg("--max-records", type=_positive, default=None, help="cap for this run (default: the spec's)"),
    ],
)
def land_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from orchestration.demo import IngestError, ingest_summary, run_ingest

    product_spec(settings, args.product)
    try:
        with _status(f"landing {args.product} from {settings.kafka_bootstrap}…"):
            outcome = run_ingest(args.product, partitions=args.partitions, max_records=args.max_records)
    except IngestError as exc:
        raise CliError(str(exc)) from None
    for line in ingest_summary(outcome):
        print(line)
    return 0


@command(
    "demo",
    help="start the broker, produce demo clicks, land them, print a summary (what `make demo` runs)",
    args=[
        arg("--events", type=_positive, default=200_000, help="click events to produce (default 200000)"),
        arg("--hours", type=_positive, default=6, help="spread over the last H hours (default 6)"),
        arg("--invalid-rate", type=_rate, default=0.01, help="fraction of invalid events (default 0.01)"),
        arg("--seed", type=int, default=None, help="random seed (default: a fresh one each run)"),
    ],
)
def demo_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from orchestration.demo import IngestError, render_demo, run_demo

    started = time.monotonic()
    try:
        if _interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            with Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), transient=True) as bar:
                task = bar.add_task("produce", total=args.events)
                demo = run_demo(
                    settings, args.events, args.hours, args.invalid_rate, args.seed,
                    say=bar.console.print, progress=lambda n, total: bar.update(task, completed=n),
                )
        else:
            demo = run_demo(settings, args.events, args.hours, args.invalid_rate, args.seed)
    except IngestError as exc:
        raise CliError(str(exc)) from None
    for line in render_demo(demo):
        print(line)
    print(f"\ndemo done in {time.monotonic() - started:.1f}s")
    return 0


@command("offsets show", help="committed offsets of a product, with the broker's end and the lag",
         args=[arg("product", help="data product name")])
def offsets_show(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.kafka_reader import (
        KafkaReadError,
        consumer_config,
        partitions_of,
        probe_partitions,
    )
    from orchestration.resources import default_flowsuite_resource

    spec = product_spec(settings, args.product, expectations=False)
    flowsuite = default_flowsuite_resource().process_config_and_initialize()  # EnvVar fields resolved outside Dagster
    states = flowsuite.metastore().committed_offsets(spec.name)
    conf = consumer_config(settings.kafka_bootstrap, spec.consumer_group, flowsuite.kafka())
    probes = {}
    try:
        partitions = partitions_of(conf, spec.topic)
        probes = probe_partitions(conf, spec.topic, {p: states[p].next_offset if p in states else 0 for p in partitions})
    except KafkaReadError as exc:
        print(f"(broker: {exc})", file=sys.stderr)
    print(f"{spec.name} (topic {spec.topic}, group {spec.consumer_group})")
    print(f"{'partition':>9} {'committed':>12} {'broker end':>12} {'lag':>10}  last run")
    for p in sorted(set(states) | set(probes)):
        s, pr = states.get(p), probes.get(p)
        end = "?" if pr is None else f"{pr.end if pr.end is not None else pr.end_hint:,}"
        lag = "?" if pr is None else f"{pr.waiting:,}"
        committed = "-" if s is None else f"{s.next_offset:,}"
        when = "never landed" if s is None else f"{s.run_id} at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s.updated_at))}"
        print(f"{p:>9} {committed:>12} {end:>12} {lag:>10}  {when}")
    return 0


@command(
    "offsets reset",
    help="move a partition's committed offset (the explicit choice after a topic lost its history)",
    args=[
        arg("product", help="data product name"),
        arg("--partition", type=int, required=True, help="Kafka partition"),
        arg("--to", required=True, help="start (oldest record on the broker), end (after the newest) or an offset"),
    ],
)
def offsets_reset(args: argparse.Namespace, settings: Settings) -> int:
    from confluent_kafka import Consumer, TopicPartition

    from connectors.kafka_reader import consumer_config, partitions_of, probe_partitions
    from orchestration.resources import default_flowsuite_resource

    spec = product_spec(settings, args.product, expectations=False)
    flowsuite = default_flowsuite_resource().process_config_and_initialize()  # EnvVar fields resolved outside Dagster
    conf = consumer_config(settings.kafka_bootstrap, spec.consumer_group, flowsuite.kafka())
    if args.partition not in partitions_of(conf, spec.topic):
        raise CliError(f"topic {spec.topic} has no partition {args.partition}")
    consumer = Consumer(conf)
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(spec.topic, args.partition), timeout=10, cached=False)
        # The exact end comes from a fetch (ListOffsets is only a hint on Tansu).
        probe = probe_partitions(conf, spec.topic, {args.partition: low}, always_fetch=[args.partition], consumer=consumer)
    finally:
        consumer.close()
    pr = probe[args.partition]
    end = pr.end if pr.end is not None else pr.end_hint
    if args.to == "start":
        target = low
    elif args.to == "end":
        target = end
    elif args.to.isdigit():
        target = int(args.to)
        if not low <= target <= end:
            raise CliError(f"offset {target} is outside {spec.topic}[{args.partition}]'s log ({low}..{end})")
    else:
        raise CliError(f"--to must be start, end or an offset, got {args.to!r}")
    metastore = flowsuite.metastore()
    before = metastore.committed_offsets(spec.name).get(args.partition)
    metastore.reset_offset(spec.name, spec.topic, args.partition, target, run_id=f"reset-by-cli-{int(time.time())}")
    was = "never landed" if before is None else f"was {before.next_offset:,}"
    print(f"{spec.name}[{args.partition}]: committed offset set to {target:,} ({was}; broker holds {low:,}..{end:,})")
    return 0
