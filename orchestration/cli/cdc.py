"""`flowsuite cdc …`: change data capture from PostgreSQL (a click group, `group`).

    flowsuite cdc run shop_orders             # until caught up with the server, then stop
    flowsuite cdc run shop_orders --follow    # continuously; Ctrl-C stops it without loss
    flowsuite cdc status [NAME]               # position, slot, retained WAL and lag
    flowsuite cdc reset NAME --yes            # drop the slot and the position: a new snapshot next run

Ctrl-C (or SIGTERM) sets a stop flag the capture loop checks between messages: the step in
flight is finished when its transaction is complete, anything else is simply not recorded
and goes out again, with the same ce_id, on the next run.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from connectors.settings import Settings
from orchestration.cli.common import CliError, engine, pass_settings


def _sources(settings: Settings) -> tuple[list, dict]:
    from connectors.sources import load_sources
    from quality.expectations import load_checked_specs

    specs = load_checked_specs(settings.products_dir)
    return [s for s in load_sources(settings.products_dir, specs) if s.mode == "cdc"], {s.name: s for s in specs}


def _one(settings: Settings, name: str):
    sources, products = _sources(settings)
    by_name = {s.name: s for s in sources}
    if name not in by_name:
        raise CliError(f"no change-data-capture source {name!r} in {settings.products_dir / 'sources'} "
                                   f"(known: {', '.join(sorted(by_name)) or 'none'})")
    source = by_name[name]
    return source, products[source.product]


def _metastore(settings: Settings):
    return engine(settings).metastore()


def status_rows(settings: Settings, products: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per CDC source: position and slot (retained WAL, lag); `flowsuite status` shows them."""
    from connectors.sources import UnsetVariableError
    from connectors.sources.cdc.checks import slot_report
    from connectors.sources.cdc.pgoutput import lsn_text
    from connectors.sources.cdc.position import read_position
    from connectors.sources.cdc.server import CdcError

    sources, _ = _sources(settings)
    rows = []
    metastore = _metastore(settings)
    for s in sources:
        if products and s.product not in products:
            continue
        pos = read_position(metastore, s.name, s.slot_name)
        row: dict[str, Any] = {
            "source": s.name, "product": s.product, "table": s.qualified_table, "slot": s.slot_name,
            "snapshot": "done" if pos.snapshot_done else ("running" if pos.stored else "not started"),
            "position": lsn_text(pos.commit_lsn) if pos.commit_lsn else None,
            "events_published": pos.events_published,
            "max_retained_wal_bytes": s.max_retained_wal,
        }
        try:
            info = slot_report(s)
        except (CdcError, UnsetVariableError) as exc:  # the server away, or its URL's ${VAR} unset
            row["error"] = str(exc)
        else:
            row.update(slot_exists=info is not None,
                       slot_active=info.active if info else None,
                       retained_wal_bytes=info.retained_wal_bytes if info else None,
                       lag_bytes=info.lag_bytes if info else None)
        rows.append(row)
    return rows


def render_rows(rows: list[dict[str, Any]]) -> list[str]:
    def mb(v: int | None) -> str:
        return "?" if v is None else f"{v / 1024**2:.1f} MB"

    out = []
    for r in rows:
        head = f"cdc {r['source']} ({r['table']} → {r['product']}): snapshot {r['snapshot']}, position {r['position'] or 'none'}, " \
               f"{r['events_published']} event(s) published"
        if "error" in r:
            out.append(f"{head}; slot unknown: {r['error']}")
        elif not r["slot_exists"]:
            out.append(f"{head}; slot {r['slot']} not created yet")
        else:
            over = " OVER THE BOUND" if (r["retained_wal_bytes"] or 0) > r["max_retained_wal_bytes"] else ""
            out.append(f"{head}; slot {r['slot']} {'active' if r['slot_active'] else 'inactive'}, retains "
                       f"{mb(r['retained_wal_bytes'])} of WAL (bound {mb(r['max_retained_wal_bytes'])}){over}, "
                       f"lag {mb(r['lag_bytes'])}")
    return out


@click.group("cdc", help="Change data capture from PostgreSQL (mode: cdc sources).")
def group() -> None:
    pass


@group.command("run", help="Capture until caught up (or continuously with --follow; Ctrl-C stops it without loss).")
@click.argument("name")
@click.option("--follow", is_flag=True, help="keep capturing until Ctrl-C / SIGTERM")
@click.option("--max-seconds", type=float, default=None, help="stop after this long")
@pass_settings
def run_cmd(settings: Settings, name: str, follow: bool, max_seconds: float | None) -> None:
    from connectors.sources.cdc import CaptureOptions, capture
    from connectors.sources.cdc.pgoutput import lsn_text

    source, product = _one(settings, name)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def progress(r) -> None:
        if follow:
            click.echo(f"{source.name}: {r.transactions} transaction(s), {r.events} event(s) published", err=True)

    flowsuite = engine(settings)
    try:  # a CdcError is the engine's: the root group prints it (one line, its exit code)
        r = capture(source, product, flowsuite.run_context(),
                    CaptureOptions(follow=follow, stop=stop, max_seconds=max_seconds, progress=progress))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for w in r.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"{source.name}: snapshot {r.snapshot_rows} row(s), {r.transactions} transaction(s), {r.events} event(s) "
               f"to topic {r.topic}; position {lsn_text(r.position_after) if r.position_after else 'none'}"
               + (f"; {r.slot_after.describe()}" if r.slot_after else "")
               + (" (stopped)" if stop.is_set() else ""))


@group.command("status", help="Position, slot, retained WAL and lag of each CDC source.")
@click.argument("name", required=False)
@pass_settings
def status_cmd(settings: Settings, name: str | None) -> None:
    rows = status_rows(settings)
    if name:
        rows = [r for r in rows if r["source"] == name]
        if not rows:
            raise CliError(f"no change-data-capture source {name!r}")
    for line in render_rows(rows) or ["no change-data-capture sources"]:
        click.echo(line)


@group.command("reset", help="Drop the slot and forget the position: the next run takes a new snapshot.")
@click.argument("name")
@click.option("--yes", is_flag=True, help="really do it")
@pass_settings
def reset_cmd(settings: Settings, name: str, yes: bool) -> None:
    from connectors.sources.cdc.position import forget_position
    from connectors.sources.cdc.server import connect, drop_slot

    source, _ = _one(settings, name)
    if not yes:
        raise CliError(f"this drops slot {source.slot_name} and the recorded position; add --yes")
    conn = connect(source.resolved_url())  # a CdcError or UnsetVariableError: the root group's one line
    try:
        dropped = drop_slot(conn, source.slot_name)
    finally:
        conn.close()
    forget_position(_metastore(settings), source.name)
    click.echo(f"{source.name}: {'dropped slot ' + source.slot_name if dropped else 'no slot to drop'}; position forgotten")
