"""The `P/warehouse` asset of each data product with a database sink: the table kept current.

Thin over `connectors.warehouse.sink.sync`: materializing it upserts everything the lake committed
since the sink's own offsets (kept in the warehouse, in the same transaction as the rows) and
reports inserted / updated / deleted / skipped-as-stale rows, offsets and duration. It sits
downstream of `P/landed` in the product's ingest job, so a blocking check that fails on the
landed batch stops it (Dagster's blocking check semantics).
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.

import dagster as dg

from assets.landing import landed_key
from connectors.errors import FlowsuiteError
from connectors.spec import DataProductSpec
from connectors.warehouse import SyncResult, WarehouseSink, sync
from orchestration.failures import failure
from orchestration.keys import warehouse_key
from orchestration.resources import FlowsuiteResource


def warehouse_kind(url: str | None) -> str:
    """The Dagster kind of a warehouse URL: postgres, mysql or sqlite."""
    scheme = (url or "sqlite").split(":", 1)[0].split("+", 1)[0].lower()
    return {"postgresql": "postgres", "postgres": "postgres", "mariadb": "mysql"}.get(scheme, scheme)


def _configured_warehouse_url() -> str | None:
    try:
        from connectors.settings import load_settings

        return load_settings().warehouse_url
    except Exception:  # noqa: BLE001 - only decides the kind tag
        return None


def sync_metadata(result: SyncResult) -> dict:
    """What a person wants to see about one sync, as Dagster metadata."""
    return {
        "rows_inserted": result.inserted,
        "rows_updated": result.updated,
        "rows_deleted": result.deleted,
        "rows_skipped_stale": result.skipped_stale,
        "rows_reduced_in_batch": result.reduced,
        "rows_skipped_null_key": result.skipped_null_key,
        "rows_read": result.rows_read,
        "batches": result.batches,
        "offsets_before": dg.MetadataValue.json({str(p): n for p, n in sorted(result.offsets_before.items())}),
        "offsets_after": dg.MetadataValue.json({str(p): n for p, n in sorted(result.offsets_after.items())}),
        "added_columns": dg.MetadataValue.json(result.added_columns),
        "blocked_hours": dg.MetadataValue.json(result.blocked_hours),
        "duration_s": round(result.duration_s, 3),
        "table": result.table,
        "warehouse": f"{result.dialect} ({result.url})",  # password hidden
        "dagster/table_name": result.table,
        "dagster/row_count": result.table_rows if result.table_rows is not None else 0,
    }


def build_warehouse_definitions(spec: DataProductSpec) -> dg.Definitions:
    """The warehouse asset of one product (empty when the spec has no enabled database sink)."""
    db = spec.sinks.database
    if db is None or not db.enabled:
        return dg.Definitions()
    kind = warehouse_kind(_configured_warehouse_url())
    deletes = "tombstones delete rows" if spec.deletes_enabled else "no deletes"
    version = "the Kafka (partition, offset)" if db.version == "offset" else f"the `{db.version}` field"

    @dg.asset(
        key=warehouse_key(spec),
        deps=[landed_key(spec)],
        group_name=spec.name,
        owners=[spec.owner],
        kinds={kind},
        description=(
            f"Table `{spec.table_name}`: the latest record per key ({', '.join(spec.key)}) of topic "
            f"{spec.topic}, kept current by an exactly-once UPSERT of what landed. A row is only replaced "
            f"by a newer version ({version}); {deletes}."
        ),
        tags={"flowsuite/product": spec.name},
        metadata={"dagster/table_name": spec.table_name, "flowsuite/key": ", ".join(spec.key)},
    )
    def warehouse(context: dg.AssetExecutionContext, flowsuite: FlowsuiteResource) -> dg.MaterializeResult:
        try:
            sink = WarehouseSink(spec, flowsuite.warehouse_url)
        except FlowsuiteError as exc:  # a bad URL or missing driver: refused without echoing the URL
            raise failure(exc) from None
        try:
            result = sync(spec, lake=flowsuite.lake(), metastore=flowsuite.metastore(), sink=sink)
        except FlowsuiteError as exc:
            raise failure(exc) from None
        finally:
            sink.dispose()
        context.log.info(
            f"{spec.name}: {result.inserted} inserted, {result.updated} updated, {result.deleted} deleted, "
            f"{result.skipped_stale} stale in {result.table} ({result.url}), {result.duration_s:.2f}s"
        )
        if result.blocked_hours:
            context.log.warning(
                f"{spec.name}: stopped before hours blocked by a failing quality check: {', '.join(result.blocked_hours)}"
            )
        return dg.MaterializeResult(metadata=sync_metadata(result))

    return dg.Definitions(assets=[warehouse])
