"""The sections of `flowsuite demo`'s summary: each takes the `Demo` and returns its lines.

orchestration/demo/__init__.py lists them, in order, in `SECTIONS`; a new section is a function
here (or in a module of its own) and one line there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.settings import Settings
from orchestration.ingest import QUIET_LOGGERS, IngestOutcome, dagster_instance


@dataclass
class Demo:
    """What a summary section gets: the settings, the product's spec and resources, the run."""

    settings: Settings
    spec: Any
    lake: Any
    metastore: Any
    produced: Any  # examples.demo_data.ProduceReport
    ingest: IngestOutcome


def hours_section(demo: Demo) -> list[str]:
    files = demo.metastore.live_files(demo.spec.name)
    by_hour: dict[str, list[int]] = {}
    for f in files:
        rows_files = by_hour.setdefault(f.hour, [0, 0])
        rows_files[0] += f.rows
        rows_files[1] += 1
    lines = [f"{'hour (UTC)':<16} {'rows':>10} {'files':>6}"]
    lines += [f"{h:<16} {r:>10,} {n:>6}" for h, (r, n) in sorted(by_hour.items())]
    total = sum(r for r, _ in by_hour.values())
    lines.append(f"{'total':<16} {total:>10,} {len(files):>6}")
    return lines


def quarantine_section(demo: Demo) -> list[str]:
    from connectors.flows import quarantine_by_reason

    files = demo.metastore.live_files(demo.spec.name, kinds=("quarantine",))
    if not files:
        return ["nothing quarantined"]
    table = demo.lake.read_tables([f.path for f in files], columns=["_error"])
    groups = quarantine_by_reason(table.column("_error").to_pylist())
    lines = [f"{table.num_rows:,} record(s) in {demo.lake.url}/_quarantine/{demo.spec.name}/, "
             "by reason (code, records, one record's whole message):"]
    for code, n, sample in groups[:10]:
        lines.append(f"  {n:>6,}  {code}")
        lines.append(f"          e.g. {sample}")
    if len(groups) > 10:
        lines.append(f"  … and {len(groups) - 10} more kind(s): `flowsuite quarantine list {demo.spec.name}`")
    return lines


def offsets_section(demo: Demo) -> list[str]:
    states = demo.metastore.committed_offsets(demo.spec.name)
    return [
        f"partition {p}: next offset {s.next_offset:,} ({'at end' if s.at_eof else 'more waiting'})"
        for p, s in sorted(states.items())
    ] or ["none yet"]


def ui_section(demo: Demo) -> list[str]:
    where = "recorded in DAGSTER_HOME" if demo.ingest.persistent else "ephemeral (set DAGSTER_HOME to keep runs)"
    return [
        f"the run is {where}; `make dev` starts the broker and the Dagster UI at http://127.0.0.1:3000",
        f"(asset {demo.spec.name}/landed, sensor {demo.spec.name}_offsets, job {demo.spec.name}_ingest);",
        *_read_hint(demo),
    ]


def _read_hint(demo: Demo) -> list[str]:
    """An exact way to read what is sealed. A glob over the product's folders would also read open
    hours and, mid-compaction, an hour's old and new files at once (its rows twice)."""
    sealed = sorted(demo.metastore.marked_hours(demo.spec.name))
    if not sealed:
        return [f"read the live files of an hour exactly: flowsuite read {demo.spec.name} --hour <YYYY-MM-DD-HH>"]
    lines = [
        f"read the sealed hours exactly (the metastore's live files, never a directory glob, which would also "
        f"read open hours and an hour mid-compaction twice): flowsuite read {demo.spec.name} --from {sealed[0]} --to {sealed[-1]}",
    ]
    if demo.spec.sinks.lake.iceberg.enabled:
        lines.append(f"or through the Iceberg table flowsuite.{demo.spec.name} from any engine "
                     f"(`flowsuite table {demo.spec.name}`; docs/lake.md)")
    return lines


def compaction_section(demo: Demo) -> list[str]:
    """Compact the demo's closed hours through the `<P>_hourly` job (one run per hour, so the
    hour partitions show as materialized in the UI) and show files before → after."""
    from connectors.flows import hours_due
    from orchestration.definitions import defs

    due, skipped = hours_due(demo.spec, demo.metastore)
    lines = [f"{s.hour}: skipped ({s.reason})" for s in skipped]
    if not due:
        open_hours = [h.hour for h in demo.metastore.hours(demo.spec.name) if h.state != "compacted"]
        return lines + [
            "no closed hour is waiting"
            + (f"; still open (end + allowed lateness not passed): {', '.join(open_hours)}" if open_hours else "")
        ]
    job = defs().resolve_job_def(f"{demo.spec.name}_hourly")
    instance = dagster_instance()
    for hour in due:
        partition_key = f"{hour.hour}:00"  # the HourlyPartitionsDefinition key of the hour
        result = job.execute_in_process(
            partition_key=partition_key, instance=instance, raise_on_error=False,
            tags={"flowsuite/trigger": "demo"}, run_config={"loggers": QUIET_LOGGERS},
        )
        mats = [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
        if not result.success or not mats:
            lines.append(f"{hour.hour}: compaction run {result.run_id} failed; see the run in the UI")
            continue
        meta = {k: getattr(v, "value", v) for k, v in mats[-1].event_specific_data.materialization.metadata.items()}
        lines.append(
            f"{hour.hour} ({hour.reason}): {meta['files_before']} → {meta['files_after']} files, "
            f"{meta['rows']:,} rows, {meta['bytes_before']:,} → {meta['bytes_after']:,} bytes, "
            f"_SUCCESS {'written' if meta['markers_written'] else 'not written'}"
        )
    return lines


def warehouse_section(demo: Demo) -> list[str]:
    """Sync (normally a no-op: the ingest run already did) and show the table."""
    from connectors.warehouse import WarehouseSink, sync

    sink = WarehouseSink(demo.spec, demo.settings.warehouse_url)
    try:
        result = sync(demo.spec, lake=demo.lake, metastore=demo.metastore, sink=sink)
        lines = result.lines()
        import sqlalchemy as sa

        with sink.engine.connect() as conn:
            sample = conn.execute(sa.select(sink.table).order_by(sink.table.c._offset.desc()).limit(3)).mappings().all()
        for row in sample:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
        return lines
    finally:
        sink.dispose()
