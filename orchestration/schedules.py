"""The `hourly_compaction` schedule: at five past each hour, compact what is due.

At its tick it asks the metastore (resource `flowsuite`) which hours of each product are
closed (end + allowed lateness passed by the tick time) and need a run — never compacted,
reopened by late data, compacted but not yet marked, or left unfinished by a crash — and not
blocked by a quality gate (`connectors.flows.compaction.hours_due`). It requests one run per hour with
a deterministic run key `<product>:<hour>:g<generation>` (plus `:after-<run>` when a dead
claim is in the way): the same tick evaluated twice requests nothing new, and a reopened hour,
whose next compaction is a new generation, gets a new run.

A Dagster schedule targets one job, and one job may hold only assets of one partitions
definition, so the schedule's job `hourly_compaction` selects the `P/hourly` assets of every
product that shares the first product's hourly partitions (same start); each run request
selects its product's asset. Products with another start get their own schedule
`hourly_compaction_<product>` (same evaluation), as does each product declared as a Dagster
component (`flowsuite.DataProduct`, orchestration/defs/). The schedules start stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from assets.hourly import MODE_TAG, hourly_key, hourly_partitions
from connectors.flows import hours_due
from connectors.spec import DataProductSpec
from orchestration.resources import FlowsuiteResource

SCHEDULE_NAME = "hourly_compaction"
CRON = "5 * * * *"


def partition_key_of(hour: str) -> str:
    """'2026-11-26-10' → the Dagster hourly key '2026-11-26-10:00'."""
    return f"{hour}:00"


def _hour_assets(spec: DataProductSpec) -> list[dg.AssetKey]:
    """What a compaction run of an hour materializes: P/hourly, then P/table when published to Iceberg."""
    from assets.table import table_key

    return [hourly_key(spec), *([table_key(spec)] if spec.sinks.lake.iceberg.enabled else [])]


def run_requests_at(specs: Sequence[DataProductSpec], flowsuite: FlowsuiteResource, when: datetime) -> tuple[list[dg.RunRequest], list[str]]:
    metastore = flowsuite.metastore()
    requests: list[dg.RunRequest] = []
    notes: list[str] = []
    for spec in specs:
        due, skipped = hours_due(spec, metastore, when)
        for s in skipped:
            notes.append(f"{spec.name} {s.hour}: {s.reason}")
        for d in due:
            requests.append(
                dg.RunRequest(
                    run_key=f"{spec.name}:{d.hour}:g{d.generation}{d.run_key_suffix}",
                    partition_key=partition_key_of(d.hour),
                    asset_selection=_hour_assets(spec),
                    tags={"flowsuite/product": spec.name, "flowsuite/due": d.reason, MODE_TAG: "compact"},
                )
            )
    return requests, notes


def build_schedule(name: str, specs: list[DataProductSpec]) -> dg.ScheduleDefinition:
    """The compaction schedule `name` (and its job of the same name) over the hours of `specs`,
    which share one partitions start; a component product (flowsuite/component.py) gets its own."""
    job = dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*(k for s in specs for k in _hour_assets(s))),
        partitions_def=hourly_partitions(specs[0]),
        description="Compaction runs of closed hours, requested by the hourly_compaction schedule.",
        tags={"flowsuite/kind": "hourly"},
    )

    @dg.schedule(
        name=name,
        cron_schedule=CRON,
        execution_timezone="UTC",
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            "At five past each hour: compact every closed hour that is new, reopened by late data, "
            "not yet marked or unfinished, and not blocked by a quality gate."
        ),
    )
    def evaluate(context: dg.ScheduleEvaluationContext, flowsuite: FlowsuiteResource):
        when = context.scheduled_execution_time or datetime.now(UTC)
        requests, notes = run_requests_at(specs, flowsuite, when.astimezone(UTC))
        for note in notes:
            context.log.info(f"skipped {note}")
        if not requests:
            why = "no closed hour needs compaction"
            return dg.SkipReason(why + (f" ({'; '.join(notes)})" if notes else ""))
        return requests

    return evaluate


def build_schedules(specs: Sequence[DataProductSpec]) -> list[dg.ScheduleDefinition]:
    groups: dict[datetime, list[DataProductSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.partitioning.start, []).append(spec)
    schedules = []
    for i, group in enumerate(groups.values()):
        names = [SCHEDULE_NAME] if i == 0 else [f"{SCHEDULE_NAME}_{s.name}" for s in group[:1]]
        schedules.append(build_schedule(names[0], group))
    return schedules
