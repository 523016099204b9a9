"""`flowsuite read` and `flowsuite compact`: the lake from the command line.

    flowsuite read clicks --hour 2026-11-26-10 [--rows 20] [--format table|csv]
    flowsuite read clicks --from 2026-11-26-08 --to 2026-11-26-10 --rows 0   # files only
    flowsuite compact clicks [--hour 2026-11-26-10]

`read` lists the live files from the metastore (never a directory listing) and prints rows
through DuckDB (pyarrow on S3). `compact` compacts every closed hour that is due now, or the
hour given (an open hour is compacted but gets no `_SUCCESS` marker until it closes).
"""

from __future__ import annotations

import argparse

from orchestration.cli import CliError, arg, command, product_spec
from orchestration.settings import Settings


def _stores(settings: Settings):
    from connectors.lake import Lake
    from connectors.metastore import Metastore

    return Lake(settings.lake_url), Metastore(settings.metastore_url)


@command(
    "read",
    help="list an hour's (or a range's) live files from the metastore and print rows",
    args=[
        arg("product"),
        arg("--hour", default=None, help="an hour such as 2026-11-26-10"),
        arg("--from", dest="first", default=None, help="first hour of a range"),
        arg("--to", dest="last", default=None, help="last hour of a range (included)"),
        arg("--rows", type=int, default=20, help="rows to print (0: files only; default 20)"),
        arg("--format", choices=["table", "csv"], default="table"),
    ],
)
def read(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.readers import format_rows, live_files_between, read_rows

    if bool(args.hour) == bool(args.first or args.last):
        raise CliError("give either --hour H or --from A --to B")
    first, last = (args.hour, args.hour) if args.hour else (args.first, args.last or args.first)
    product_spec(settings, args.product, expectations=False)
    lake, metastore = _stores(settings)
    try:
        files = live_files_between(metastore, args.product, first, last)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.format == "table" or args.rows == 0:
        for f in files:
            print(f"{f.kind:9} {f.rows:>9} rows {f.bytes:>11} B  {lake.uri(f.path)}")
        print(f"{len(files)} live file(s), {sum(f.rows for f in files)} rows")
    if args.rows and files:
        table = read_rows(lake, files, limit=args.rows)
        print(format_rows(table, args.format))
    return 0


@command(
    "compact",
    help="compact the closed hours that are due now (or one given hour)",
    args=[arg("product"), arg("--hour", default=None, help="only this hour (compacted even if still open)")],
)
def compact(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.compaction import CompactionResult, compact_closed_hours

    spec = product_spec(settings, args.product)
    lake, metastore = _stores(settings)

    def show(r) -> None:
        print(r.summary() if isinstance(r, CompactionResult) else f"{spec.name} {r.hour}: skipped — {r.reason}")

    results, skipped = compact_closed_hours(
        spec, lake=lake, metastore=metastore, hours=[args.hour] if args.hour else None, on_result=show
    )
    if not results and not skipped:
        print(f"{spec.name}: no closed hour needs compaction")
    return 1 if args.hour and skipped else 0


def _demo_compaction_section(demo) -> list[str]:
    """Compact the demo's closed hours through the `<P>_hourly` job (one run per hour, so the
    hour partitions show as materialized in the UI) and show files before → after."""
    from connectors.compaction import hours_due
    from orchestration.definitions import defs
    from orchestration.demo import QUIET_LOGGERS, dagster_instance

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


try:
    from orchestration.demo import DEMO_SECTIONS

    DEMO_SECTIONS.append(("hourly compaction of closed hours", _demo_compaction_section))
except ImportError:  # pragma: no cover - the demo module is optional
    pass
