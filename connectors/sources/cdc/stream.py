"""Change data capture from PostgreSQL: snapshot, then stream, each change published once.

One step of the stream, repeated (at most `max_batch_changes` changes, whole transactions,
or whatever arrived when the stream goes quiet):

1. produce the transactions' events with the idempotent producer (`enable.idempotence`,
   `acks=all`) as their changes arrive;
2. flush and check that the broker acknowledged every one;
3. record the last commit LSN in the metastore (`fs_cdc_positions`);
4. only then confirm it to the server (`send_feedback(flush_lsn=…)`), which may then
   recycle the WAL.

A crash anywhere restarts from the recorded position: the server sends again what was not
confirmed, transactions at or below the position are skipped, and the events published
but not recorded go out again with the same `ce_id`, which landing de-duplicates. While the
table is idle the server's position is confirmed every `idle_feedback`, so the slot does
not hold WAL for ever. A lost connection (the server restarting) reconnects and resumes.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connectors.faults import crash_point
from connectors.flows.context import RunContext
from connectors.kafka import ensure_topic
from connectors.sources.cdc import pgoutput as pgo
from connectors.sources.cdc.events import EventBuilder, TxnContext
from connectors.sources.cdc.position import Position, read_position, store_position
from connectors.sources.cdc.producer import make_producer, send
from connectors.sources.cdc.server import (
    CdcError,
    SlotInfo,
    SourceUnreachable,
    check_server,
    connect,
    create_slot,
    current_wal_lsn,
    ensure_publication,
    primary_key,
    slot_info,
)
from connectors.sources.cdc.snapshot import read_snapshot
from connectors.sources.cdc.spec import CdcSourceSpec, SnapshotNeededError
from connectors.sources.cdc.types import type_name
from connectors.spec import DataProductSpec

log = logging.getLogger(__name__)
KEEPALIVE_S = 5.0


@dataclass
class CaptureResult:
    source: str
    topic: str
    slot: str
    snapshot_rows: int = 0
    transactions: int = 0
    events: int = 0
    skipped_transactions: int = 0  # at or below the recorded position: published before
    reconnects: int = 0
    sessions: int = 0  # connections that got as far as checking the server
    created_slot: bool = False
    created_publication: bool = False
    position_before: int | None = None
    position_after: int | None = None
    slot_after: SlotInfo | None = None
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def _connection_lost(exc: BaseException) -> bool:
    """A lost connection, as psycopg2 reports it (a replication stream cut mid-COPY raises a
    bare DatabaseError, "no COPY in progress"); not an SQL error, which retrying cannot fix."""
    import psycopg2

    return isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError) or type(exc) is psycopg2.DatabaseError


@dataclass(frozen=True)
class CaptureOptions:
    """How long one capture runs, and what it calls back.

    follow: keep streaming after catching up, until `stop` is set (a long-running capture);
    max_seconds: stop after this long in any case; reconnect_for_s: how long a lost source
    connection is retried before the capture fails; progress: called with the result so far."""

    follow: bool = False
    stop: threading.Event | None = None
    max_seconds: float | None = None
    reconnect_for_s: float = 60.0
    progress: Callable[[CaptureResult], None] | None = None


def capture(
    source: CdcSourceSpec,
    product: DataProductSpec,
    run: RunContext,
    options: CaptureOptions | None = None,
    *,
    source_url: str | None = None,
) -> CaptureResult:
    """Snapshot when needed, then stream until caught up (or, with `options.follow`, until
    `options.stop`). `run` carries the metastore (the position), the broker and its client
    settings; its lake is not used. `source_url` replaces the source file's connection."""
    options = options or CaptureOptions()
    metastore, reconnect_for_s = run.metastore, options.reconnect_for_s
    started = time.monotonic()
    url = source_url or source.resolved_url()
    result = CaptureResult(source.name, product.topic, source.slot_name)
    result.position_before = read_position(metastore, source.name, source.slot_name).commit_lsn
    ensure_topic(run.bootstrap, product.topic, source.topic_partitions, kafka_config=dict(run.kafka_config))
    stop = options.stop or threading.Event()
    lost_since: float | None = None
    try:
        while True:
            try:
                _Session(source, product, url, run, result, stop, options.progress).run(
                    follow=options.follow, deadline=None if options.max_seconds is None else started + options.max_seconds)
                break
            except Exception as exc:  # the server went away: resume from the record
                if not (_connection_lost(exc) or isinstance(exc, SourceUnreachable) and result.sessions):
                    raise
                now = time.monotonic()
                lost_since = lost_since or now
                if now - lost_since > reconnect_for_s or stop.is_set():
                    raise CdcError(f"{source.name}: lost the connection to the source database and could not "
                                   f"reconnect for {reconnect_for_s:.0f}s ({str(exc).strip().splitlines()[0][:200]})") from None
                result.reconnects += 1
                log.warning("%s: connection lost (%s); reconnecting", source.name, type(exc).__name__)
                stop.wait(min(2.0, 0.2 * result.reconnects))
            else:
                lost_since = None
        conn = connect(url)
        try:
            result.slot_after = slot_info(conn, source.slot_name)
        finally:
            conn.close()
        return result
    finally:
        result.position_after = read_position(metastore, source.name, source.slot_name).commit_lsn
        result.duration_s = time.monotonic() - started


class _Session:
    """One connection's worth of capture (a reconnect starts a new one from the record)."""

    def __init__(self, source, product, url, run: RunContext, result, stop, progress):
        self.source, self.product, self.url, self.metastore = source, product, url, run.metastore
        self.result, self.stop, self.progress = result, stop, progress
        self.producer, self.delivery = make_producer(run.bootstrap, dict(run.kafka_config))
        self.sent = 0  # events produced since the last recorded step
        self.pending: tuple[int, int] | None = None  # (commit lsn, end lsn) of the last unrecorded txn
        self.pending_txns = 0
        self.relations: dict[int, pgo.Relation] = {}

    def _emit(self, event: tuple) -> None:
        key, value, headers = event
        send(self.producer, self.product.topic, key, value, headers)
        self.sent += 1
        if self.sent % 1000 == 0:
            self.producer.poll(0)

    def _acknowledged(self, what: str) -> int:
        remaining = self.producer.flush(60)
        failures, delivered = self.delivery.take()
        got = sum(delivered.values())
        if failures or remaining or got != self.sent:
            first = f"; first error: {failures[0]}" if failures else ""
            raise CdcError(f"{self.source.name}: {self.sent - got} of {self.sent} events of {what} were not acknowledged "
                           f"by topic {self.product.topic!r}{first}; the position did not move, they go out again")
        n, self.sent = self.sent, 0
        return n

    def run(self, *, follow: bool, deadline: float | None) -> None:
        source = self.source
        conn = connect(self.url)
        repl = None
        try:
            identity = check_server(conn, source)
            self.result.sessions += 1
            if identity == "d":
                msg = (f"{source.qualified_table} has REPLICA IDENTITY DEFAULT: a delete's `before` holds the key "
                       "columns only, an update's `before` is null")
                if msg not in self.result.warnings:
                    self.result.warnings.append(msg)
            self.result.created_publication |= ensure_publication(conn, source)
            key_columns = source.key or list(self.product.key) or primary_key(conn, source)
            if not key_columns:
                raise CdcError(f"{source.name}: no key: set `key` in the source file or give the table a primary key")
            with conn.cursor() as cur:
                cur.execute("SELECT current_database()")
                database = cur.fetchone()[0]
            self.builder = EventBuilder(source, key_columns, database)
            pos = read_position(self.metastore, source.name, source.slot_name)
            slot = slot_info(conn, source.slot_name)
            repl = connect(self.url, replication=True)
            if slot is None:
                if pos.snapshot_done:
                    raise SnapshotNeededError(
                        source.name, f"{source.name}: replication slot {source.slot_name!r} is gone but the recorded "
                        f"position is {pgo.lsn_text(pos.commit_lsn or 0)}; changes since then are lost to the slot. "
                        "Reset the source's capture to take a new snapshot")
                created = create_slot(repl, source)
                self.result.created_slot = True
                pos = Position(source.name, source.slot_name, snapshot_lsn=created.consistent_lsn)
                store_position(self.metastore, pos)
                self._snapshot(pos, created.snapshot_name)
            elif slot.plugin != "pgoutput":
                raise CdcError(f"{source.name}: slot {source.slot_name!r} uses plugin {slot.plugin!r}, not pgoutput")
            elif not pos.snapshot_done:
                pos.snapshot_lsn = pos.snapshot_lsn or slot.confirmed_flush_lsn
                self._snapshot(pos, None)
            self.pos = pos
            target = None if follow else current_wal_lsn(conn)
            self._stream(repl, target, deadline)
        finally:
            try:
                self.producer.flush(5)
            finally:
                if repl is not None:
                    repl.close()
                conn.close()

    def _snapshot(self, pos: Position, snapshot_name: str | None) -> None:
        rows, columns = read_snapshot(self.url, self.source, self.builder, slot=self.source.slot_name,
                                      snapshot_lsn=pos.snapshot_lsn, snapshot_name=snapshot_name, emit=self._emit)
        n = self._acknowledged("the snapshot")
        crash_point("cdc_snapshot_acked")
        pos.snapshot_done, pos.columns = True, columns
        pos.events_published += n
        store_position(self.metastore, pos)
        self.result.snapshot_rows += rows
        self.result.events += n

    # --- the stream ---------------------------------------------------------------------------

    def _stream(self, repl, target: int | None, deadline: float | None) -> None:
        cur = repl.cursor()
        cur.start_replication(slot_name=self.source.slot_name, decode=False, start_lsn=0,
                              options={"proto_version": "1", "publication_names": self.source.publication_name})
        txn: TxnContext | None = None
        skip = False
        n = 0
        last_feedback = time.monotonic()
        seen_end = 0
        msgs = 0
        while True:
            msg = cur.read_message()
            if msg is not None:
                m = pgo.decode(msg.payload)
                if isinstance(m, pgo.Begin):
                    txn, n = TxnContext(self.source.slot_name, m.final_lsn, m.commit_time, m.xid), 0
                    skip = self.pos.commit_lsn is not None and m.final_lsn <= self.pos.commit_lsn
                elif isinstance(m, pgo.Commit):
                    seen_end = max(seen_end, m.end_lsn)
                    if skip:
                        self.result.skipped_transactions += 1
                    elif n:
                        self.pending, self.pending_txns = (m.commit_lsn, m.end_lsn), self.pending_txns + 1
                    txn = None
                    if self.sent >= self.source.max_batch_changes:
                        self._record(cur)
                        last_feedback = time.monotonic()
                    if self.stop.is_set():  # Ctrl-C while changes keep coming: stop at a commit
                        if self.pending is not None:
                            self._record(cur)
                        return
                elif isinstance(m, pgo.Relation):
                    self._relation(m)
                elif txn is not None and not skip:
                    n += self._change(m, txn, n, msg.data_start)
                msgs += 1
                if msgs % 2000 == 0:
                    if self.stop.is_set():  # inside a long transaction: it goes out again next run
                        if self.pending is not None:
                            self._record(cur)
                        return
                    if time.monotonic() - last_feedback >= KEEPALIVE_S:
                        cur.send_feedback(reply=False)  # stay within wal_sender_timeout
                        last_feedback = time.monotonic()
                continue
            # Quiet: finish the step, confirm the server's position when nothing is in flight.
            if txn is None and self.pending is not None:
                self._record(cur)
                last_feedback = time.monotonic()
            now = time.monotonic()
            if txn is None and self.pending is None and now - last_feedback >= self.source.idle_feedback.total_seconds():
                confirm = max(cur.wal_end, seen_end, self.pos.end_lsn or 0)
                cur.send_feedback(flush_lsn=confirm, reply=True, force=True)
                last_feedback = now
            elif now - last_feedback >= KEEPALIVE_S:
                cur.send_feedback(reply=True)
                last_feedback = now
            caught_up = target is not None and txn is None and self.pending is None and max(cur.wal_end, seen_end) >= target
            if caught_up or self.stop.is_set() or (deadline is not None and now > deadline):
                if txn is None and self.pending is not None:
                    self._record(cur)
                if txn is None:  # everything read is recorded: the server may forget it
                    cur.send_feedback(flush_lsn=max(cur.wal_end, seen_end, self.pos.end_lsn or 0), force=True)
                return
            if target is not None and not caught_up and now - last_feedback > 0.2:
                cur.send_feedback(reply=True)  # ask for a keepalive: it carries the server's position
                last_feedback = now
            select.select([repl], [], [], 0.05 if target is not None else 0.5)

    def _record(self, cur) -> None:
        what = f"{self.pending_txns} transaction(s) up to {pgo.lsn_text(self.pending[0])}"
        n = self._acknowledged(what)
        crash_point("cdc_after_ack")
        self.pos.commit_lsn, self.pos.end_lsn = self.pending
        self.pos.events_published += n
        store_position(self.metastore, self.pos)
        crash_point("cdc_after_record")
        cur.send_feedback(flush_lsn=self.pos.end_lsn, force=True)
        self.result.transactions += self.pending_txns
        self.result.events += n
        self.pending, self.pending_txns = None, 0
        if self.progress is not None:
            self.progress(self.result)

    def _relation(self, rel: pgo.Relation) -> None:
        self.relations[rel.oid] = rel
        if rel.namespace != self.source.table_schema or rel.name != self.source.table:
            return
        known = self.pos.columns
        for col in rel.columns:
            before = known.get(col.name)
            if before is not None and before != col.type_oid:
                raise SnapshotNeededError(
                    self.source.name,
                    f"{self.source.name}: column {col.name!r} of {rel.qualified} changed type from {type_name(before)} "
                    f"to {type_name(col.type_oid)}; capture stopped before publishing anything of the new type. Change "
                    "the product's field to match, then reset the source's capture (a new snapshot)")
        for col in rel.columns:
            if col.name not in known:
                log.info("%s: new column %s (%s)", self.source.name, col.name, type_name(col.type_oid))
                known[col.name] = col.type_oid

    def _change(self, m: Any, txn: TxnContext, n: int, change_lsn: int) -> int:
        b = self.builder
        if isinstance(m, pgo.Truncate):
            events = []
            for oid in m.relation_oids:
                rel = self.relations.get(oid)
                if rel is not None and self._ours(rel):
                    events += b.truncate(rel, txn, n + len(events), change_lsn)
        elif isinstance(m, pgo.Insert | pgo.Update | pgo.Delete):
            rel = self.relations.get(m.relation_oid)
            if rel is None:
                raise CdcError(f"{self.source.name}: a change of relation {m.relation_oid} came before its Relation message")
            if not self._ours(rel):
                return 0
            if isinstance(m, pgo.Insert):
                events = b.insert(rel, m.new, txn, n, change_lsn)
            elif isinstance(m, pgo.Update):
                events = b.update(rel, m.new, m.old, m.old_key, txn, n, change_lsn)
            else:
                events = b.delete(rel, m.old, m.old_key, txn, n, change_lsn)
        else:
            return 0  # Origin, Type (types are read by OID), logical messages
        for e in events:
            self._emit(e)
        return len(events)

    def _ours(self, rel: pgo.Relation) -> bool:
        return rel.namespace == self.source.table_schema and rel.name == self.source.table
