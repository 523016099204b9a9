"""`flowsuite quarantine list|replay P`: what quality rejected, and landing it after a fix.

- `quarantine list P` — live quarantined records by kind of reason and hour (`--json`).
- `quarantine replay P` — re-validate them under the current spec and land those that pass,
  exactly once (`--dry-run` says what would land).
"""

from __future__ import annotations

import json

import click

from connectors.settings import Settings
from orchestration.cli.common import pass_settings, product_spec
from orchestration.cli.lake import stores


def table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, c in enumerate(columns):
        table.add_column(c, justify="right" if i == len(columns) - 1 else "left")
    for r in rows:
        table.add_row(*(str(x) for x in r))
    Console(width=max(120, Console().width)).print(table)


@click.group("quarantine", help="records quality rejected: count them, or land those that now pass")
def group() -> None:
    pass


@group.command("list", help="count a product's quarantined records by reason and hour")
@click.argument("product")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@pass_settings
def list_(settings: Settings, product: str, as_json: bool) -> None:
    from connectors.flows import quarantine_counts

    spec = product_spec(settings, product, expectations=False)
    lake, metastore = stores(settings)
    counts = quarantine_counts(lake, metastore, spec.name)
    total = sum(c.records for c in counts)
    if as_json:
        click.echo(json.dumps({"product": spec.name, "records": total,
                          "by_reason_and_hour": [c.__dict__ for c in counts]}, indent=2))
        return
    if not counts:
        click.echo(f"{spec.name}: nothing quarantined")
        return
    table(f"{spec.name}: {total:,} quarantined record(s)", ["reason", "hour", "records"],
           [[c.reason, c.hour, f"{c.records:,}"] for c in counts])


@group.command("replay", help="land the quarantined records that pass under the current spec (exactly once)")
@click.argument("product")
@click.option("--dry-run", is_flag=True, help="say what would land; change nothing")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_settings
def replay(settings: Settings, product: str, dry_run: bool, as_json: bool) -> None:
    from connectors.flows import replay_quarantine
    from orchestration.cli.progress import progress_bar

    spec = product_spec(settings, product)
    lake, metastore = stores(settings)
    with progress_bar(f"replaying the quarantine of {spec.name}", total=None, unit="files") as bar:

        def advance(done: int, total: int) -> None:
            bar.set_total(total)
            bar(done)

        result = replay_quarantine(spec, lake=lake, metastore=metastore, dry_run=dry_run, progress=advance)
    if as_json:
        click.echo(json.dumps({
            "product": spec.name, "run_id": result.run_id, "dry_run": result.dry_run,
            "replayed": result.replayed, "still_quarantined": result.still_quarantined,
            "hours": result.hours, "reopened_hours": result.reopened_hours,
            "files": [f.__dict__ for f in result.files],
        }, indent=2))
        return
    verb = "would land" if dry_run else "landed"
    click.echo(f"{spec.name}: {verb} {result.replayed:,} record(s) from quarantine; "
          f"{result.still_quarantined:,} still fail the current spec")
    for hour, n in result.hours.items():
        click.echo(f"  {hour}: {n:,}")
    if result.reopened_hours:
        click.echo(f"  reopened compacted hours: {', '.join(result.reopened_hours)}")
    for f in result.files:
        if f.skipped:
            click.echo(f"  skipped {f.quarantine_file}: {f.skipped}", err=True)
