"""`flowsuite quarantine …` and `flowsuite quality …`: acting on what quality rejected or blocked.

- `quarantine list P` — live quarantined records by kind of reason and hour (`--json`).
- `quarantine replay P` — re-validate them under the current spec and land those that pass,
  exactly once (`--dry-run` says what would land).
- `quality blocked P` — hours blocked by a failed blocking check, with the reason.
- `quality unblock P [--hour H]` — clear blocks after the owner dealt with the cause.
"""

from __future__ import annotations

import argparse
import json
import sys

from orchestration.cli import CliError, arg, command, product_spec
from orchestration.settings import Settings


def _stores(settings: Settings):
    from connectors.lake import Lake
    from connectors.metastore import Metastore

    return Lake(settings.lake_url), Metastore(settings.metastore_url)


def _table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        # Counts right-aligned; text folds onto more lines instead of being cut with an ellipsis.
        table.add_column(c, justify="right" if c in ("records",) else "left", overflow="fold")
    for r in rows:
        table.add_row(*(str(x) for x in r))
    Console(width=max(120, Console().width)).print(table)


@command(
    "quarantine list",
    help="count a product's quarantined records by reason and hour",
    args=[arg("product"), arg("--json", action="store_true", help="print JSON instead of a table")],
)
def quarantine_list(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.quarantine import quarantine_counts

    spec = product_spec(settings, args.product, expectations=False)
    lake, metastore = _stores(settings)
    counts = quarantine_counts(lake, metastore, spec.name)
    total = sum(c.records for c in counts)
    if args.json:
        print(json.dumps({"product": spec.name, "records": total,
                          "by_reason_and_hour": [c.__dict__ for c in counts]}, indent=2))
        return 0
    if not counts:
        print(f"{spec.name}: nothing quarantined")
        return 0
    _table(f"{spec.name}: {total:,} quarantined record(s)", ["reason", "hour", "records", "example (one record's whole message)"],
           [[c.code, c.hour, f"{c.records:,}", c.sample] for c in counts])
    return 0


@command(
    "quarantine replay",
    help="land the quarantined records that pass under the current spec (exactly once)",
    args=[
        arg("product"),
        arg("--dry-run", action="store_true", help="say what would land; change nothing"),
        arg("--json", action="store_true", help="print JSON"),
    ],
)
def quarantine_replay(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.quarantine import replay_quarantine
    from orchestration.progress import progress_bar

    spec = product_spec(settings, args.product)
    lake, metastore = _stores(settings)
    with progress_bar(f"replaying the quarantine of {spec.name}", total=None, unit="files") as bar:

        def advance(done: int, total: int) -> None:
            bar.set_total(total)
            bar(done)

        result = replay_quarantine(spec, lake=lake, metastore=metastore, dry_run=args.dry_run, progress=advance)
    if args.json:
        print(json.dumps({
            "product": spec.name, "run_id": result.run_id, "dry_run": result.dry_run,
            "replayed": result.replayed, "still_quarantined": result.still_quarantined,
            "hours": result.hours, "reopened_hours": result.reopened_hours,
            "files": [f.__dict__ for f in result.files],
        }, indent=2))
        return 0
    verb = "would land" if args.dry_run else "landed"
    print(f"{spec.name}: {verb} {result.replayed:,} record(s) from quarantine; "
          f"{result.still_quarantined:,} still fail the current spec")
    for hour, n in result.hours.items():
        print(f"  {hour}: {n:,}")
    if result.reopened_hours:
        print(f"  reopened compacted hours: {', '.join(result.reopened_hours)}")
    for f in result.files:
        if f.skipped:
            print(f"  skipped {f.quarantine_file}: {f.skipped}", file=sys.stderr)
    return 0


@command("quality blocked", help="list a product's hours blocked by a failed blocking check",
         args=[arg("product"), arg("--json", action="store_true", help="print JSON")])
def quality_blocked(args: argparse.Namespace, settings: Settings) -> int:
    spec = product_spec(settings, args.product, expectations=False)
    _, metastore = _stores(settings)
    blocked = {h.hour: h.blocked_reason for h in metastore.hours(spec.name) if h.blocked_reason}
    if args.json:
        print(json.dumps(blocked, indent=2))
    elif not blocked:
        print(f"{spec.name}: no blocked hours")
    else:
        _table(f"{spec.name}: {len(blocked)} blocked hour(s)", ["hour", "reason"],
               [[h, r] for h, r in sorted(blocked.items())])
    return 0


@command(
    "quality unblock",
    help="clear quality blocks of a product (all hours, or --hour H) so compaction and sync resume",
    args=[arg("product"), arg("--hour", action="append", default=None,
                               help="an hour such as 2026-11-26-10 (repeatable; default: every blocked hour)")],
)
def quality_unblock(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.lake import hour_key, parse_hour_key

    spec = product_spec(settings, args.product, expectations=False)
    _, metastore = _stores(settings)
    try:
        hours = [hour_key(parse_hour_key(h)) for h in args.hour] if args.hour else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    before = {h.hour for h in metastore.hours(spec.name) if h.blocked_reason}
    metastore.unblock_hours(spec.name, hours)
    cleared = sorted(before if hours is None else before & set(hours))
    print(f"{spec.name}: unblocked {len(cleared)} hour(s){': ' + ', '.join(cleared) if cleared else ''}")
    return 0
