"""`flowsuite warehouse sync P`: upsert what the lake committed into the product's table."""

from __future__ import annotations

import click

from connectors.settings import Settings
from orchestration.cli.common import CliError, engine, pass_settings, product_spec


def database_spec(settings: Settings, product: str):
    spec = product_spec(settings, product)
    if spec.sinks.database is None or not spec.sinks.database.enabled:
        raise CliError(f"{product} has no database sink (sinks.database in its spec)")
    return spec


@click.group("warehouse", help="the product's warehouse table (the UPSERT sink)")
def group() -> None:
    pass


@group.command("sync", help="upsert what the lake committed into the product's warehouse table, exactly once")
@click.argument("product")
@click.option("--batch-rows", type=click.IntRange(min=1), default=None, help="rows per transaction (default: the spec's)")
@pass_settings
def sync(settings: Settings, product: str, batch_rows: int | None) -> None:
    from connectors.warehouse import sync as sync_product

    spec = database_spec(settings, product)
    flowsuite = engine(settings)
    result = sync_product(spec, lake=flowsuite.lake(), metastore=flowsuite.metastore(),
                          url=flowsuite.warehouse_url, batch_rows=batch_rows)
    click.echo("\n".join(result.lines()))
