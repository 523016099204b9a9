"""`flowsuite status [PRODUCT ...] [--json]`: per product, where landing, hours and sinks stand."""

from __future__ import annotations

import json

import click

from connectors.settings import Settings
from orchestration.cli.common import engine, pass_settings


@click.command("status", help="per product: committed vs end offsets, lag, last landing, hours, quarantine, warehouse rows")
@click.argument("products", nargs=-1, metavar="[PRODUCT]...")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document for scripts")
@pass_settings
def command(settings: Settings, products: tuple[str, ...], as_json: bool) -> None:
    from orchestration.services.status import collect_status, render_status, status_json

    for product in products:  # an unknown name: the engine's one message (known: …)
        engine(settings).spec(product, checks=False)
    from orchestration.cli.flow import flow_status

    statuses = collect_status(settings, list(products) or None)
    from orchestration.cli.cdc import (  # change data capture: slots, WAL, lag
        render_rows,
        status_rows,
    )

    cdc = status_rows(settings, list(products) or None)
    flow = [f for f in flow_status(settings) if not products or f["product"] in products]
    if as_json:
        click.echo(json.dumps({**status_json(statuses), "flow_subscriptions": flow, "cdc": cdc}, indent=2))
    else:
        render_status(statuses)
        for line in render_rows(cdc):
            click.echo(line)
        for f in flow:  # subscriptions of other organisations (flowsuite flow list)
            lag = ", ".join(f"p{p}: {v['lag'] if v['lag'] is not None else '?'}" for p, v in f["partitions"].items())
            click.echo(f"flow {f['product']} → {f['org']} {f['id'][:8]}: {f['state']}, delivered {f['delivered']:,}, "
                       f"failures {f['failures']}, last delivery {f['last_success']}, lag {lag or '-'}"
                       + (f" ({f['last_outcome']})" if f["failures"] else ""))
