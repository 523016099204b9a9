"""The `P/table` asset: the product's sealed hours as the Apache Iceberg table `flowsuite.P`.

Its own hour-partitioned asset downstream of `P/hourly` (not a step inside it), so the lineage
reads topic → `P/landed` → `P/hourly` → `P/table`, a catalog that is down fails only this
asset while compaction (the exactly-once authority) goes on, and any hour can be rerun on
its own. It materializes when its hour of `P/hourly` does (`AutomationCondition.eager()`,
evaluated by Dagster's default automation sensor) or on request.

A run publishes every sealed hour not yet in the table, in publish-sequence order
(`connectors.tables.publish`: exactly once, however often or concurrently it runs), then
expires snapshots older than `sinks.lake.iceberg.retain` and deletes the files only they
referenced. A requested hour that is not sealed (open, reopened by late data, not marked,
blocked) fails the run with the reason: the partition must not look published when it is not.
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.

from typing import Any

import dagster as dg

from assets.hourly import MAX_PARTITIONS_PER_RUN, hourly_key, hourly_partitions
from connectors.lake import normalize_hour
from connectors.spec import DataProductSpec
from connectors.tables import IcebergTables, publish_sealed_hours
from connectors.tables.publish import PublishResult, sealed_hours
from orchestration.keys import table_key
from orchestration.resources import FlowsuiteResource


def iceberg_tables(flowsuite: FlowsuiteResource) -> IcebergTables:
    """The catalog (FLOWSUITE_ICEBERG_CATALOG_URL, else the metastore's database) over the lake."""
    return flowsuite.engine().iceberg_tables()


def build_table_definitions(spec: DataProductSpec) -> dg.Definitions:
    if not spec.sinks.lake.iceberg.enabled:
        return dg.Definitions()

    @dg.asset(
        key=table_key(spec),
        partitions_def=hourly_partitions(spec),
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN),  # as P/hourly
        deps=[hourly_key(spec)],
        group_name=spec.name,
        owners=[spec.owner],
        kinds={"iceberg"},
        tags={"flowsuite/product": spec.name},
        automation_condition=dg.AutomationCondition.eager(),
        description=(
            f"Sealed hours of {spec.name} as the Apache Iceberg table `flowsuite.{spec.name}` (catalog `flowsuite`, "
            "JDBC layout in the metastore's database), partitioned by hour(event time). Each sealed hour is one "
            "snapshot registering its compacted files as they are; a reopened hour's new generation replaces them. "
            f"Snapshots are kept {spec.sinks.lake.iceberg.retain}."
        ),
    )
    def table(context: dg.AssetExecutionContext, flowsuite: FlowsuiteResource):
        return publish_hours(context, spec, flowsuite)

    return dg.Definitions(assets=[table])


def publish_hours(context: dg.AssetExecutionContext, spec: DataProductSpec, flowsuite: FlowsuiteResource) -> dg.MaterializeResult:
    lake, metastore = flowsuite.lake(), flowsuite.metastore()
    hours = [normalize_hour(k) for k in context.partition_keys]
    tables = iceberg_tables(flowsuite)
    try:
        result = publish_sealed_hours(spec, lake=lake, metastore=metastore, tables=tables)
        context.log.info(result.summary())
        sealed = sealed_hours(metastore, spec.name)
        unsealed = [h for h in hours if h not in sealed]
        if unsealed:
            why = {r.hour: r for r in metastore.hours(spec.name)}
            raise dg.Failure(
                description=f"{spec.name}: {len(unsealed)} hour(s) not sealed, so not in the table: "
                + "; ".join(f"{h}: {_unsealed_reason(why.get(h))}" for h in unsealed),
                allow_retries=False,
            )
        return dg.MaterializeResult(metadata=table_metadata(spec, tables, result, hours))
    finally:
        tables.dispose()


def _unsealed_reason(rec) -> str:
    if rec is None:
        return "nothing landed"
    if rec.blocked_reason:
        return f"blocked: {rec.blocked_reason}"
    if rec.state != "compacted":
        return f"{rec.state} (compacted and marked once closed)"
    return "compacted but no _SUCCESS marker yet (still open)"


def table_metadata(spec: DataProductSpec, tables: IcebergTables, result: PublishResult, hours: list[str]) -> dict[str, Any]:
    first, last = min(hours), max(hours)
    where = (
        f"event_time >= TIMESTAMP '{first[:10]} {first[11:]}:00:00 UTC' "
        f"AND event_time < TIMESTAMP '{last[:10]} {last[11:]}:00:00 UTC' + INTERVAL '1' HOUR"
    )
    rows = ["| hour | gen | seq | operation | files | rows | snapshot |", "|---|---|---|---|---|---|---|"]
    rows += [f"| {p['hour']} | {p['generation']} | {p['seq']} | {p['operation']} | {p['files']} | {p['rows']} | {p['snapshot_id']} |"
             for p in result.published]
    meta: dict[str, Any] = {
        "table": result.identifier,
        "catalog": "flowsuite (pyiceberg SqlCatalog; Iceberg JDBC catalog layout)",
        "dagster/uri": dg.MetadataValue.path(tables.lake_uri(spec.name)),
        "snapshot_id": dg.MetadataValue.text(str(result.snapshot_id)),
        "publish_seq": result.last_seq,
        "published": len(result.published),
        "lost_races": result.lost_races,
        "publications": dg.MetadataValue.md("\n".join(rows) if result.published else "nothing new: every sealed hour was in the table"),
        "query": dg.MetadataValue.md(
            f"Spark / Trino (catalog `flowsuite`, docs/lake.md):\n```sql\nSELECT kind, count(*) FROM flowsuite.flowsuite.{spec.name}\n"
            f"WHERE {where}\nGROUP BY kind\n```\npyiceberg:\n```python\nfrom pyiceberg.catalog.sql import SqlCatalog\n"
            f"t = SqlCatalog('flowsuite', uri='<FLOWSUITE_METASTORE_URL>').load_table('{result.identifier}')\n"
            f"t.scan(row_filter=\"event_time >= '{first[:10]}T{first[11:]}:00:00+00:00'\").to_arrow()\n```\n"
            f"or `flowsuite table {spec.name}`"
        ),
    }
    if result.expiry is not None:
        meta["expired_snapshots"] = len(result.expiry.expired_snapshots)
        meta["deleted_files"] = len(result.expiry.deleted_files)
    if result.skipped:
        meta["skipped"] = dg.MetadataValue.md("\n".join(f"- {h} g{g}: {why}" for h, g, why in result.skipped))
    return meta
