"""`flowsuite land P`: run a product's `<P>_ingest` job now (recorded in DAGSTER_HOME)."""

from __future__ import annotations

from contextlib import nullcontext

import click

from connectors.settings import Settings
from orchestration.cli.common import CliError, interactive, pass_settings, product_spec


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
    from orchestration.ingest import IngestError, ingest_summary, run_ingest

    product_spec(settings, product)
    try:
        with status_line(f"landing {product} from {settings.kafka_bootstrap}…"):
            outcome = run_ingest(product, partitions=list(partitions) or None, max_records=max_records)
    except IngestError as exc:
        raise CliError(str(exc)) from None
    for line in ingest_summary(outcome):
        click.echo(line)
