"""`flowsuite status [PRODUCT ...] [--json]`: per product, where landing, hours and sinks stand."""

from __future__ import annotations

import json

import click

from connectors.settings import Settings
from orchestration.cli.common import CliError, pass_settings


@click.command("status", help="per product: committed vs end offsets, lag, last landing, hours, quarantine, warehouse rows")
@click.argument("products", nargs=-1, metavar="[PRODUCT]...")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document for scripts")
@pass_settings
def command(settings: Settings, products: tuple[str, ...], as_json: bool) -> None:
    from connectors.spec import load_specs
    from orchestration.services.status import collect_status, render_status, status_json

    if products:
        known = {s.name for s in load_specs(settings.products_dir)}
        unknown = sorted(set(products) - known)
        if unknown:
            raise CliError(
                f"no data product {', '.join(unknown)} in {settings.products_dir} "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )
    statuses = collect_status(settings, list(products) or None)
    if as_json:
        click.echo(json.dumps(status_json(statuses), indent=2))
    else:
        render_status(statuses)
