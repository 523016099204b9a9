"""`flowsuite land P`: run a product's `<P>_ingest` job now (recorded in DAGSTER_HOME)."""

from __future__ import annotations

from contextlib import nullcontext

import click

from connectors.settings import Settings
from orchestration.cli.common import interactive, pass_settings, product_spec


def status_line(message: str):
    """A spinner on an interactive terminal, nothing otherwise."""
    if not interactive():
        return nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message)


@click.command("land", help="land a data product now: run its <product>_ingest job (recorded in DAGSTER_HOME)")
@click.argument("product")
@click.option("--partition", "partitions", type=click.IntRange(min=0), multiple=True,
              help="only this Kafka partition (repeatable)")
@click.option("--max-records", type=click.IntRange(min=1), default=None, help="cap for this run (default: the spec's)")
@pass_settings
def command(settings: Settings, product: str, partitions: tuple[int, ...], max_records: int | None) -> None:
    from orchestration.ingest import ingest_summary, run_ingest

    product_spec(settings, product)
    with status_line(f"landing {product} from {settings.kafka_bootstrap}…"):  # an IngestError: the root's one line
        outcome = run_ingest(product, partitions=list(partitions) or None, max_records=max_records)
    for line in ingest_summary(outcome):
        click.echo(line)
