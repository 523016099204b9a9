"""The `P/hourly` asset of each data product: one partition per event-time hour (UTC).

Materializing an hour compacts its live files into `part-g<generation>-<n>.parquet`, verified,
swapped in the metastore, and marked `_SUCCESS` once the hour is closed
(`connectors.flows.compaction`). How an hour is rebuilt:

- a normal run (the `hourly_compaction` schedule, "Materialize" in the UI) **compacts**;
- a **backfill** launched from the UI or `dagster job backfill` (runs tagged `dagster/backfill`),
  a run tagged `flowsuite/mode=replay`, or config `replay: true` **rebuilds by replay** from the
  stream (`connectors.flows.replay`), falling back to the live files when the topic lost the range;
  config `replay: false` or the tag `flowsuite/mode=compact` forces compaction.

Backfills use `BackfillPolicy.multi_run(24)`: one run handles up to a day of hours, one after
another, so a month is 31 runs rather than 744. A **blocked** hour (a failing blocking quality
check, `HourRecord.blocked_reason`) fails the run before anything is written, naming the hour
and the reason: a partition must not look fresh while its data is known bad. The schedule
never requests blocked hours.
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.

from typing import Any

import dagster as dg

from assets.metadata import hourly_links
from assets.runs import dead_run_checker
from connectors.errors import FlowsuiteError
from connectors.flows import CompactionResult, compact_hour, replay_hour
from connectors.lake import normalize_hour
from connectors.spec import DataProductSpec
from orchestration.failures import failure
from orchestration.keys import hourly_key, landed_key
from orchestration.resources import FlowsuiteResource

MODE_TAG = "flowsuite/mode"
BACKFILL_TAG = "dagster/backfill"
MAX_PARTITIONS_PER_RUN = 24


class HourlyConfig(dg.Config):
    """replay: rebuild the hours from the stream (default: only in backfills)."""

    replay: bool | None = None



def hourly_job_name(spec: DataProductSpec) -> str:
    return f"{spec.name}_hourly"


def hourly_partitions(spec: DataProductSpec) -> dg.HourlyPartitionsDefinition:
    return dg.HourlyPartitionsDefinition(start_date=spec.partitioning.start.strftime("%Y-%m-%d-%H:%M"), timezone="UTC")


def choose_mode(tags: dict[str, str], config: HourlyConfig) -> str:
    """'replay' or 'compact' (see the module docstring)."""
    if config.replay is not None:
        return "replay" if config.replay else "compact"
    if tags.get(MODE_TAG) in ("replay", "compact"):
        return tags[MODE_TAG]
    return "replay" if BACKFILL_TAG in tags else "compact"


def build_hourly_definitions(spec: DataProductSpec) -> dg.Definitions:
    """The hourly asset and the `<P>_hourly` job of one product."""
    partitions = hourly_partitions(spec)

    @dg.asset(
        key=hourly_key(spec),
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN),
        deps=[landed_key(spec)],
        group_name=spec.name,
        owners=[spec.owner],
        kinds={"parquet"},
        tags={"flowsuite/product": spec.name},
        description=(
            f"Hour partitions of {spec.name} (UTC event time), compacted into few large Parquet files "
            f"`<lake>/{spec.name}/dt=…/hour=…/part-g<generation>-<n>.parquet`, verified row for row, "
            "with a `_SUCCESS` manifest once the hour is closed (end + "
            f"{int(spec.partitioning.allowed_lateness.total_seconds() // 60)} min allowed lateness). "
            "A backfill rebuilds hours by replaying their recorded offsets from the topic."
        ),
    )
    def hourly(context: dg.AssetExecutionContext, config: HourlyConfig, flowsuite: FlowsuiteResource):
        return materialize_hours(context, spec, config, flowsuite)

    job = dg.define_asset_job(
        hourly_job_name(spec),
        selection=dg.AssetSelection.assets(hourly_key(spec)),
        partitions_def=partitions,
        description=f"Compact (or, in a backfill, replay) hours of {spec.name}.",
        tags={"flowsuite/product": spec.name, "flowsuite/kind": "hourly"},
    )
    return dg.Definitions(assets=[hourly], jobs=[job])


def materialize_hours(
    context: dg.AssetExecutionContext, spec: DataProductSpec, config: HourlyConfig, flowsuite: FlowsuiteResource
) -> dg.MaterializeResult:
    lake, metastore = flowsuite.lake(), flowsuite.metastore()
    tags = dict(context.run.tags)
    mode = choose_mode(tags, config)
    hours = [normalize_hour(k) for k in context.partition_keys]
    blocked = [(h, r.blocked_reason) for h in hours if (r := metastore.hour(spec.name, h)) and r.blocked_reason]
    if blocked:
        raise dg.Failure(
            description=f"{spec.name}: {len(blocked)} hour(s) blocked by a failing quality gate; nothing compacted: "
            + "; ".join(f"{h}: {why}" for h, why in blocked),
            allow_retries=False,
        )
    run = flowsuite.run_context(context.run_id, dead_run_checker(context.instance))

    results: list[CompactionResult] = []
    for h in hours:
        try:
            r = replay_hour(spec, h, run) if mode == "replay" else compact_hour(spec, h, run)
        except FlowsuiteError as exc:
            raise failure(exc) from None
        context.log.info(r.summary() + (f" ({r.note})" if r.note else ""))
        results.append(r)
    return dg.MaterializeResult(
        metadata={**hourly_metadata(mode, results), **hourly_links(spec, lake, hours)}
    )


def hourly_metadata(mode: str, results: list[CompactionResult]) -> dict[str, Any]:
    table = ["| hour | status | gen | files before → after | rows | MB after | marker | source |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        table.append(
            f"| {r.hour} | {r.status} | {r.generation} | {len(r.files_before)} → {len(r.files_after)} | {r.rows} "
            f"| {r.bytes_after / 1e6:.2f} | {'yes' if r.marker_written else 'no: ' + r.marker_reason} | {r.source} |"
        )
    meta: dict[str, Any] = {
        "mode": mode,
        "hours": len(results),
        "files_before": sum(len(r.files_before) for r in results),
        "files_after": sum(len(r.files_after) for r in results),
        "rows": dg.MetadataValue.int(sum(r.rows for r in results)),
        "bytes_before": sum(r.bytes_before for r in results),
        "bytes_after": sum(r.bytes_after for r in results),
        "markers_written": sum(r.marker_written for r in results),
        "summary": dg.MetadataValue.md("\n".join(table)),
    }
    if len(results) == 1:
        r = results[0]
        meta["generation"] = r.generation
        meta["offset_ranges"] = dg.MetadataValue.json(
            {str(p): v if len(v) <= 20 else {"runs": len(v), "first": v[0][0], "last": v[-1][1]} for p, v in r.offset_ranges.items()}
        )
        meta["marker"] = "written" if r.marker_written else r.marker_reason
        meta["result"] = r.reason + (f"; {r.note}" if r.note else "")
    else:
        meta["generations"] = dg.MetadataValue.json({r.hour: r.generation for r in results})
    return meta
