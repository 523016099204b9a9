"""`flowsuite offsets show|reset P`: a product's committed offsets against the broker."""

from __future__ import annotations

import sys
import time

import click

from connectors.settings import Settings
from orchestration.cli.common import CliError, pass_settings, product_spec


@click.group("offsets", help="committed offsets of a product: show them, or move one explicitly")
def group() -> None:
    pass


@group.command("show", help="committed offsets of a product, with the broker's end and the lag")
@click.argument("product")
@pass_settings
def show(settings: Settings, product: str) -> None:
    from connectors.kafka import KafkaReadError, consumer_config, partitions_of, probe_partitions
    from orchestration.resources import default_flowsuite_resource

    spec = product_spec(settings, product, expectations=False)
    flowsuite = default_flowsuite_resource().process_config_and_initialize()  # EnvVar fields resolved outside Dagster
    states = flowsuite.metastore().committed_offsets(spec.name)
    conf = consumer_config(settings.kafka_bootstrap, spec.consumer_group, flowsuite.kafka())
    probes = {}
    try:
        partitions = partitions_of(conf, spec.topic)
        probes = probe_partitions(conf, spec.topic, {p: states[p].next_offset if p in states else 0 for p in partitions})
    except KafkaReadError as exc:
        print(f"(broker: {exc})", file=sys.stderr)
    click.echo(f"{spec.name} (topic {spec.topic}, group {spec.consumer_group})")
    click.echo(f"{'partition':>9} {'committed':>12} {'broker end':>12} {'lag':>10}  last run")
    for p in sorted(set(states) | set(probes)):
        s, pr = states.get(p), probes.get(p)
        end = "?" if pr is None else f"{pr.end if pr.end is not None else pr.end_hint:,}"
        lag = "?" if pr is None else f"{pr.waiting:,}"
        committed = "-" if s is None else f"{s.next_offset:,}"
        when = "never landed" if s is None else f"{s.run_id} at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s.updated_at))}"
        click.echo(f"{p:>9} {committed:>12} {end:>12} {lag:>10}  {when}")


@group.command("reset", help="move a partition's committed offset (the explicit choice after a topic lost its history)")
@click.argument("product")
@click.option("--partition", type=click.IntRange(min=0), required=True, help="Kafka partition")
@click.option("--to", "to", required=True, help="start (oldest record on the broker), end (after the newest) or an offset")
@pass_settings
def reset(settings: Settings, product: str, partition: int, to: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from connectors.kafka import consumer_config, partitions_of, probe_partitions
    from orchestration.resources import default_flowsuite_resource

    spec = product_spec(settings, product, expectations=False)
    flowsuite = default_flowsuite_resource().process_config_and_initialize()  # EnvVar fields resolved outside Dagster
    conf = consumer_config(settings.kafka_bootstrap, spec.consumer_group, flowsuite.kafka())
    if partition not in partitions_of(conf, spec.topic):
        raise CliError(f"topic {spec.topic} has no partition {partition}")
    consumer = Consumer(conf)
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(spec.topic, partition), timeout=10, cached=False)
        # The exact end comes from a fetch (ListOffsets is only a hint on Tansu).
        probe = probe_partitions(conf, spec.topic, {partition: low}, always_fetch=[partition], consumer=consumer)
    finally:
        consumer.close()
    pr = probe[partition]
    end = pr.end if pr.end is not None else pr.end_hint
    if to == "start":
        target = low
    elif to == "end":
        target = end
    elif to.isdigit():
        target = int(to)
        if not low <= target <= end:
            raise CliError(f"offset {target} is outside {spec.topic}[{partition}]'s log ({low}..{end})")
    else:
        raise CliError(f"--to must be start, end or an offset, got {to!r}")
    metastore = flowsuite.metastore()
    before = metastore.committed_offsets(spec.name).get(partition)
    metastore.reset_offset(spec.name, spec.topic, partition, target, run_id=f"reset-by-cli-{int(time.time())}")
    was = "never landed" if before is None else f"was {before.next_offset:,}"
    click.echo(f"{spec.name}[{partition}]: committed offset set to {target:,} ({was}; broker holds {low:,}..{end:,})")
