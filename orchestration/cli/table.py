"""`flowsuite table`: a product's Iceberg table from the command line (a click group).

    flowsuite table clicks [--rows 20] [--hour 2026-11-26-10] [--snapshot ID]   # = table show
    flowsuite table publish clicks     # publish every sealed hour not in the table yet, expire
    flowsuite table expire clicks      # expire snapshots past sinks.lake.iceberg.retain only

`show` lists the snapshots (what each holds: hour, generation, publish sequence, files added
and removed) and prints rows read through the table with pyiceberg's scan, at the current
snapshot or the one given: no metastore, no directory listing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from connectors.settings import Settings
from orchestration.cli.common import CliError, engine, pass_settings, product_spec


class _ShowByDefault(click.Group):
    """`flowsuite table P …` is `flowsuite table show P …`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group("table", cls=_ShowByDefault, help="a data product's Apache Iceberg table (flowsuite.<product>)")
def group() -> None:
    pass


def _open(settings: Settings, product: str):
    spec = product_spec(settings, product, expectations=False)
    if not spec.sinks.lake.iceberg.enabled:
        raise CliError(f"{product} publishes no Iceberg table (sinks.lake.iceberg.enabled is false in its spec)")
    flowsuite = engine(settings)
    return spec, flowsuite.lake(), flowsuite.metastore(), flowsuite.iceberg_tables()


@group.command("show", help="snapshots of the table and rows read through it")
@click.argument("product")
@click.option("--rows", type=int, default=20, show_default=True, help="rows to print (0: snapshots only)")
@click.option("--hour", default=None, help="only this hour, e.g. 2026-11-26-10")
@click.option("--snapshot", "snapshot_id", type=int, default=None, help="read at this snapshot (default: current)")
@pass_settings
def show(settings: Settings, product: str, rows: int, hour: str | None, snapshot_id: int | None) -> None:
    from connectors.lake import format_rows

    spec, _lake, _metastore, tables = _open(settings, product)
    if not tables.exists(product):
        raise CliError(f"flowsuite.{product} does not exist yet: no sealed hour was published (`flowsuite table publish {product}`)")
    table = tables.load(product)
    current = table.current_snapshot()
    click.echo(f"table {'.'.join(table.name())} at {table.location()}")
    click.echo(f"current snapshot {current.snapshot_id if current else '-'}; {len(table.snapshots())} snapshot(s) retained "
               f"({spec.sinks.lake.iceberg.retain})")
    click.echo(f"{'snapshot':>20}  {'committed (UTC)':19}  {'operation':9}  {'hour':13}  gen  {'seq':>4}  {'+files':>6}  {'-files':>6}  {'rows':>10}")
    for s in table.snapshots():
        p = s.summary.additional_properties if s.summary else {}
        at = datetime.fromtimestamp(s.timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        op = s.summary.operation.value if s.summary else "?"
        click.echo(
            f"{s.snapshot_id:>20}  {at}  {op:9}  {p.get('flowsuite.hour', '-'):13}  {p.get('flowsuite.generation', '-'):>3}  "
            f"{p.get('flowsuite.publish-seq', '-'):>4}  {p.get('added-data-files', '0'):>6}  {p.get('deleted-data-files', '0'):>6}  "
            f"{p.get('total-records', '?'):>10}"
        )
    if rows:
        data = tables.scan(product, snapshot_id=snapshot_id, hours=[hour] if hour else None, table=table)
        click.echo(f"{data.num_rows:,} row(s) through the table{f' in {hour}' if hour else ''}; the first {min(rows, data.num_rows)}:")
        click.echo(format_rows(data.slice(0, rows), "table"))
    tables.dispose()


@group.command("publish", help="publish every sealed hour not in the table yet, then expire old snapshots")
@click.argument("product")
@pass_settings
def publish(settings: Settings, product: str) -> None:
    from connectors.tables import publish_sealed_hours

    spec, lake, metastore, tables = _open(settings, product)
    result = publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
    click.echo(result.summary())
    for h, g, why in result.skipped:
        click.echo(f"  skipped {h} generation {g}: {why}")
    if result.expiry is not None:
        click.echo(f"  expired {len(result.expiry.expired_snapshots)} snapshot(s), deleted {len(result.expiry.deleted_files)} replaced file(s)")
    tables.dispose()


@group.command("expire", help="expire snapshots older than sinks.lake.iceberg.retain and delete the files only they read")
@click.argument("product")
@pass_settings
def expire_cmd(settings: Settings, product: str) -> None:
    from connectors.tables import expire

    spec, lake, metastore, tables = _open(settings, product)
    r = expire(spec, lake=lake, metastore=metastore, tables=tables)
    click.echo(f"expired {len(r.expired_snapshots)} snapshot(s), deleted {len(r.deleted_files)} file(s), "
               f"{r.kept_deferred} replaced file(s) still referenced or within the grace period")
    tables.dispose()
