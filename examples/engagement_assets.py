"""`partner_engagement`: one count per partner and hour, served to the lake and the warehouse.

Built for the `clicks` product, which declares it (`derived: [partner_engagement]` in
dataproducts/clicks.yaml; examples/derived.py builds what specs declare, examples/engagement.py
holds the logic):

- `partner_engagement/hourly` (hourly partitions, the same as `clicks/hourly`): computes the
  hour once from `clicks`' live files and makes it the hour's only live lake file. It depends
  on **`clicks/hourly`**, not `clicks/landed`: a count that is billed must come from the hour
  as compaction verified and closed it (`_SUCCESS`), and when late data reopens and recompacts
  a clicks hour, the eager automation condition recomputes that engagement hour. (It reads
  the live files whatever their state, so materializing it early gives the count so far.)
- `partner_engagement/warehouse` (same partitions): UPSERTs the hour's lake rows — the same
  numbers, not a second computation — into the warehouse table `partner_engagement`.
- the blocking asset check `lake_matches_warehouse` on the warehouse asset compares both planes
  per partner-hour and fails naming every differing cell (partner, hour, column, lake value,
  warehouse value).
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.

import dagster as dg

from assets.hourly import hourly_key, hourly_partitions
from assets.warehouse import warehouse_kind
from connectors.lake import normalize_hour
from connectors.spec import DataProductSpec
from examples.engagement import (
    PRODUCT,
    TABLE,
    EngagementTable,
    compare_planes,
    materialize_hour,
    sync_warehouse,
)
from orchestration.keys import warehouse_key
from orchestration.resources import FlowsuiteResource

ENGAGEMENT_HOURLY = hourly_key(PRODUCT)
ENGAGEMENT_WAREHOUSE = warehouse_key(PRODUCT)
CROSS_PLANE_CHECK = "lake_matches_warehouse"
MAX_DIFFS_SHOWN = 50


def _warehouse_kind() -> str:
    try:
        from connectors.settings import load_settings

        return warehouse_kind(load_settings().warehouse_url)
    except Exception:  # noqa: BLE001 - only decides the kind tag
        return "sqlite"


def cross_plane_result(flowsuite: FlowsuiteResource, hours: list[str] | None = None) -> dg.AssetCheckResult:
    table = EngagementTable(flowsuite.warehouse_url)
    try:
        compared, diffs = compare_planes(flowsuite.lake(), flowsuite.metastore(), table, hours)
    finally:
        table.dispose()
    shown = [str(d) for d in diffs[:MAX_DIFFS_SHOWN]]
    return dg.AssetCheckResult(
        check_name=CROSS_PLANE_CHECK,
        passed=not diffs,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(f"lake and warehouse agree on all {compared} partner-hours" if not diffs else
                     f"{len(diffs)} cell(s) differ between lake and warehouse: " + "; ".join(shown[:5])),
        metadata={
            "partner_hours_compared": compared,
            "cells_differing": len(diffs),
            "differences": dg.MetadataValue.json([
                {"partner_id": d.partner_id, "hour": d.hour, "column": d.column, "lake": d.lake, "warehouse": d.warehouse}
                for d in diffs[:MAX_DIFFS_SHOWN]
            ]),
        },
    )


def build_engagement_definitions(spec: DataProductSpec) -> dg.Definitions:
    """The engagement assets and check, derived from the product `spec` (the one that declares
    `derived: [partner_engagement]`: `clicks`, SOURCE_PRODUCT)."""
    partitions = hourly_partitions(spec)

    @dg.asset(
        key=ENGAGEMENT_HOURLY,
        partitions_def=partitions,
        deps=[hourly_key(spec)],
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=24),
        automation_condition=dg.AutomationCondition.eager(),
        group_name=PRODUCT,
        owners=[spec.owner],
        kinds={"parquet"},
        tags={"flowsuite/product": PRODUCT},
        description=(
            "Clicks (distinct event_id), unique users (distinct user_id among clicks) and impressions per "
            f"partner and UTC hour, computed once from the live files of {spec.name}'s hour: "
            f"`<lake>/{PRODUCT}/dt=…/hour=…/part-g<generation>-0.parquet`, the hour's only live file in the metastore."
        ),
    )
    def engagement_hourly(context: dg.AssetExecutionContext, flowsuite: FlowsuiteResource) -> dg.MaterializeResult:
        lake, metastore = flowsuite.lake(), flowsuite.metastore()
        table_md = ["| hour | partners | clicks | source files | source rows | gen |", "|---|---|---|---|---|---|"]
        partners = clicks = 0
        for key in context.partition_keys:
            r = materialize_hour(lake, metastore, normalize_hour(key), run_id=context.run_id, source=spec.name)
            context.log.info(f"{PRODUCT} {r.hour}: {r.rows} partner(s), {r.clicks} click(s) from {len(r.source_files)} file(s)")
            table_md.append(f"| {r.hour} | {r.rows} | {r.clicks} | {len(r.source_files)} | {r.source_rows} | {r.generation} |")
            partners += r.rows
            clicks += r.clicks
        return dg.MaterializeResult(metadata={
            "hours": len(context.partition_keys), "partner_hours": partners, "clicks": clicks,
            "summary": dg.MetadataValue.md("\n".join(table_md)),
        })

    @dg.asset(
        key=ENGAGEMENT_WAREHOUSE,
        partitions_def=partitions,
        deps=[ENGAGEMENT_HOURLY],
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=24),
        automation_condition=dg.AutomationCondition.eager(),
        group_name=PRODUCT,
        owners=[spec.owner],
        kinds={_warehouse_kind()},
        tags={"flowsuite/product": PRODUCT},
        metadata={"dagster/table_name": TABLE, "flowsuite/key": "partner_id, hour"},
        description=(
            f"Table `{TABLE}`: the lake's engagement rows UPSERTed by (partner_id, hour) — the same numbers as "
            f"{PRODUCT}/hourly, never a second computation; the check `{CROSS_PLANE_CHECK}` proves it."
        ),
    )
    def engagement_warehouse(context: dg.AssetExecutionContext, flowsuite: FlowsuiteResource) -> dg.MaterializeResult:
        table = EngagementTable(flowsuite.warehouse_url)
        try:
            hours = [normalize_hour(k) for k in context.partition_keys]
            totals = sync_warehouse(flowsuite.lake(), flowsuite.metastore(), table, hours)
        finally:
            table.dispose()
        return dg.MaterializeResult(metadata={**totals, "dagster/table_name": TABLE})

    @dg.asset_check(
        asset=ENGAGEMENT_WAREHOUSE,
        name=CROSS_PLANE_CHECK,
        blocking=True,
        description="Per partner-hour, the lake and the warehouse hold the same clicks, unique users and impressions.",
    )
    def lake_matches_warehouse(flowsuite: FlowsuiteResource) -> dg.AssetCheckResult:
        return cross_plane_result(flowsuite)

    job = dg.define_asset_job(
        f"{PRODUCT}_hourly",
        selection=dg.AssetSelection.assets(ENGAGEMENT_HOURLY, ENGAGEMENT_WAREHOUSE),
        partitions_def=partitions,
        description="Compute partner engagement for hours, to the lake then the warehouse, and compare both planes.",
        tags={"flowsuite/product": PRODUCT},
    )
    return dg.Definitions(assets=[engagement_hourly, engagement_warehouse], asset_checks=[lake_matches_warehouse], jobs=[job])
