"""`flowsuite produce-demo`: realistic click events (some invalid) to the broker."""

from __future__ import annotations

import click

from connectors.settings import Settings
from orchestration.cli.common import pass_settings, require_broker


@click.command("produce-demo", help="produce realistic click events (some invalid) to the broker")
@click.option("--events", type=click.IntRange(min=1), default=10_000, show_default=True, help="number of events")
@click.option("--hours", type=click.IntRange(min=1), default=3, show_default=True,
              help="spread event times over the last H hours")
@click.option("--invalid-rate", type=click.FloatRange(0.0, 1.0), default=0.01, show_default=True,
              help="fraction of invalid records, 0..1")
@click.option("--topic", default="clicks", show_default=True, help="topic")
@click.option("--partitions", type=click.IntRange(min=1), default=2, show_default=True,
              help="partitions when the topic is created")
@click.option("--seed", type=int, default=None, help="random seed (default: a fresh one each run)")
@pass_settings
def command(settings: Settings, events: int, hours: int, invalid_rate: float, topic: str, partitions: int,
            seed: int | None) -> None:
    import random

    from examples.demo_data import generate_clicks, produce
    from orchestration.cli.progress import progress_bar

    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    require_broker(settings.kafka_bootstrap)
    records = generate_clicks(events, hours, invalid_rate, seed=seed)
    with progress_bar(f"producing to {topic}", total=events) as advance:
        report = produce(settings.kafka_bootstrap, topic, records, partitions=partitions, progress=advance)
    per_partition = ", ".join(f"p{p}={n}" for p, n in report.per_partition.items())
    click.echo(
        f"produced {report.produced} records to {topic} on {settings.kafka_bootstrap} "
        f"({report.valid} valid, {report.invalid} invalid; {per_partition}; seed {seed})"
    )
