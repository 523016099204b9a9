"""`flowsuite quality blocked|unblock P`: hours a failed blocking check stopped.

- `quality blocked P` — hours blocked by a failed blocking check, with the reason.
- `quality unblock P [--hour H]` — clear blocks after the owner dealt with the cause.
"""

from __future__ import annotations

import json

import click

from connectors.settings import Settings
from orchestration.cli.common import CliError, pass_settings, product_spec
from orchestration.cli.lake import stores
from orchestration.cli.quarantine import table


@click.group("quality", help="hours blocked by a failed blocking check: list them, or clear the blocks")
def group() -> None:
    pass


@group.command("blocked", help="list a product's hours blocked by a failed blocking check")
@click.argument("product")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_settings
def blocked(settings: Settings, product: str, as_json: bool) -> None:
    spec = product_spec(settings, product, expectations=False)
    _, metastore = stores(settings)
    blocked = {h.hour: h.blocked_reason for h in metastore.hours(spec.name) if h.blocked_reason}
    if as_json:
        click.echo(json.dumps(blocked, indent=2))
    elif not blocked:
        click.echo(f"{spec.name}: no blocked hours")
    else:
        table(f"{spec.name}: {len(blocked)} blocked hour(s)", ["hour", "reason"],
               [[h, r] for h, r in sorted(blocked.items())])


@group.command("unblock", help="clear quality blocks of a product (all hours, or --hour H) so compaction and sync resume")
@click.argument("product")
@click.option("--hour", "hour", multiple=True,
              help="an hour such as 2026-11-26-10 (repeatable; default: every blocked hour)")
@pass_settings
def unblock(settings: Settings, product: str, hour: tuple[str, ...]) -> None:
    from connectors.lake import hour_key, parse_hour_key

    spec = product_spec(settings, product, expectations=False)
    _, metastore = stores(settings)
    try:
        hours = [hour_key(parse_hour_key(h)) for h in hour] if hour else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    before = {h.hour for h in metastore.hours(spec.name) if h.blocked_reason}
    metastore.unblock_hours(spec.name, hours)
    cleared = sorted(before if hours is None else before & set(hours))
    click.echo(f"{spec.name}: unblocked {len(cleared)} hour(s){': ' + ', '.join(cleared) if cleared else ''}")
