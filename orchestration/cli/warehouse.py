"""`flowsuite warehouse sync P`, and the warehouse section of `flowsuite demo`'s summary.

Registered on import by `orchestration/cli.py`.
"""

from __future__ import annotations

import argparse

from orchestration.cli import CliError, arg, command, product_spec
from orchestration.settings import Settings


def _spec(settings: Settings, product: str):
    spec = product_spec(settings, product)
    if spec.sinks.database is None or not spec.sinks.database.enabled:
        raise CliError(f"{product} has no database sink (sinks.database in its spec)")
    return spec

def sync_lines(result) -> list[str]:
    offsets = ", ".join(f"p{p}: {result.offsets_before.get(p, 0):,} → {n:,}" for p, n in sorted(result.offsets_after.items()))
    lines = [
        f"table {result.table} in {result.url}: {result.table_rows:,} rows",
        f"this sync: {result.inserted:,} inserted, {result.updated:,} updated, {result.deleted:,} deleted, "
        f"{result.skipped_stale:,} stale skipped ({result.rows_read:,} rows read in {result.batches} batch(es), "
        f"{result.duration_s:.2f}s)",
        f"sink offsets (kept in the warehouse): {offsets or 'none yet'}",
    ]
    if result.added_columns:
        lines.append(f"added columns: {', '.join(result.added_columns)}")
    if result.blocked_hours:
        lines.append(f"stopped before hours blocked by a quality check: {', '.join(result.blocked_hours)}")
    return lines


@command(
    "warehouse sync",
    help="upsert what the lake committed into the product's warehouse table, exactly once",
    args=[arg("product", help="data product name"),
          arg("--batch-rows", type=int, default=None, help="rows per transaction (default: the spec's)")],
)
def warehouse_sync(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.lake import Lake
    from connectors.metastore import Metastore
    from connectors.sql_sink import WarehouseError, sync

    spec = _spec(settings, args.product)
    try:
        result = sync(spec, lake=Lake(settings.lake_url), metastore=Metastore(settings.metastore_url),
                      url=settings.warehouse_url, batch_rows=args.batch_rows)
    except WarehouseError as exc:
        raise CliError(str(exc)) from None
    print("\n".join(sync_lines(result)))
    return 0


def _demo_section(demo) -> list[str]:
    """Sync (normally a no-op: the ingest run already did) and show the table."""
    from connectors.sql_sink import WarehouseSink, sync

    sink = WarehouseSink(demo.spec, demo.settings.warehouse_url)
    try:
        result = sync(demo.spec, lake=demo.lake, metastore=demo.metastore, sink=sink)
        lines = sync_lines(result)
        import sqlalchemy as sa

        with sink.engine.connect() as conn:
            sample = conn.execute(sa.select(sink.table).order_by(sink.table.c._offset.desc()).limit(3)).mappings().all()
        for row in sample:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
        return lines
    finally:
        sink.dispose()


try:
    from orchestration.demo import DEMO_SECTIONS

    DEMO_SECTIONS.append(("warehouse", _demo_section))
except ImportError:  # pragma: no cover - the demo module is optional
    pass
