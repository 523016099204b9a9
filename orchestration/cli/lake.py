"""`flowsuite read` and `flowsuite compact`: the lake from the command line.

    flowsuite read clicks --hour 2026-11-26-10 [--rows 20] [--format table|csv]
    flowsuite read clicks --from 2026-11-26-08 --to 2026-11-26-10 --rows 0   # files only
    flowsuite compact clicks [--hour 2026-11-26-10]

`read` lists the live files from the metastore (never a directory listing) and prints rows
through DuckDB (pyarrow on S3). `compact` compacts every closed hour that is due now, or the
hour given (an open hour is compacted but gets no `_SUCCESS` marker until it closes).
"""

from __future__ import annotations

import click

from connectors.settings import Settings
from orchestration.cli.common import CliError, engine, exit_with, pass_settings, product_spec


def stores(settings: Settings):
    """The engine's lake (with the settings' S3 options) and metastore."""
    flowsuite = engine(settings)
    return flowsuite.lake(), flowsuite.metastore()


@click.command("read", help="list an hour's (or a range's) live files from the metastore and print rows")
@click.argument("product")
@click.option("--hour", default=None, help="an hour such as 2026-11-26-10")
@click.option("--from", "first", default=None, help="first hour of a range")
@click.option("--to", "last", default=None, help="last hour of a range (included)")
@click.option("--rows", type=click.IntRange(min=0), default=20, show_default=True, help="rows to print (0: files only)")
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table", show_default=True)
@pass_settings
def read(settings: Settings, product: str, hour: str | None, first: str | None, last: str | None,
         rows: int, fmt: str) -> None:
    from connectors.lake import format_rows, live_files_between, read_rows

    if bool(hour) == bool(first or last):
        raise CliError("give either --hour H or --from A --to B")
    first, last = (hour, hour) if hour else (first, last or first)
    product_spec(settings, product, expectations=False)
    lake, metastore = stores(settings)
    try:
        files = live_files_between(metastore, product, first, last)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if fmt == "table" or rows == 0:
        for f in files:
            click.echo(f"{f.kind:9} {f.rows:>9} rows {f.bytes:>11} B  {lake.uri(f.path)}")
        click.echo(f"{len(files)} live file(s), {sum(f.rows for f in files)} rows")
    if rows and files:
        table = read_rows(lake, files, limit=rows)
        click.echo(format_rows(table, fmt))


@click.command("compact", help="compact the closed hours that are due now (or one given hour)")
@click.argument("product")
@click.option("--hour", default=None, help="only this hour (compacted even if still open)")
@pass_settings
def compact(settings: Settings, product: str, hour: str | None) -> None:
    from connectors.flows import CompactionResult, compact_closed_hours

    spec = product_spec(settings, product)

    def show(r) -> None:
        click.echo(r.summary() if isinstance(r, CompactionResult) else f"{spec.name} {r.hour}: skipped — {r.reason}")

    results, skipped = compact_closed_hours(
        spec, engine(settings).run_context(), hours=[hour] if hour else None, on_result=show
    )
    if not results and not skipped:
        click.echo(f"{spec.name}: no closed hour needs compaction")
    exit_with(1 if hour and skipped else 0)
