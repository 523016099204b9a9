"""Sealed hours into the Iceberg table, exactly once; snapshot expiry; deferred deletes.

**What is published.** A *sealed* hour: closed, compacted, its `_SUCCESS` marker written at the
hour's current generation, not blocked (`fs_hours` + `fs_markers`). Its compacted files are
registered as they are (no rewrite) in one snapshot: an `append` for a new hour, an
`overwrite` that removes the previous generation's files and adds the new ones for a reopened
hour. Snapshot properties say what it holds: `flowsuite.product`, `flowsuite.hour`,
`flowsuite.generation`, `flowsuite.rows`, `flowsuite.offset-ranges` (JSON
`{partition: [[first, last], …]}`) and `flowsuite.publish-seq`.

**Exactly once**, the way Iceberg's Kafka Connect sink guards its commits (it stores the
consumer offsets in the snapshot summary and, after a restart or a lost race, reads them back
from the table before committing again): every sealed (hour, generation) gets a sequence
number in the metastore (`fs_iceberg_queue`, assigned max + 1 under the write lock, so a
number is visible only after every smaller one). The loop: refresh the table, read the last
published sequence from the snapshot properties walking the current snapshot's ancestry,
skip every entry at or below it, commit the next one with pyiceberg's retries off; a
`CommitFailedException` (another publisher won the compare-and-set) goes round the loop
again. A crash before the commit leaves nothing; a crash after it is seen by the next
attempt in the ancestry. An entry superseded by a later generation of its hour, or whose hour
was reopened, is skipped; the later entry carries the hour.

**Files.** A compacted file a retained snapshot may reference must outlive compaction:
`defer_replaced` (called by compaction for products with `sinks.lake.iceberg.enabled`) records
replaced compacted files of a queued (hour, generation) in `fs_iceberg_deferred` instead of
deleting them. `expire` drops the snapshots older than `sinks.lake.iceberg.retain` (never the
current one), deletes their unreachable manifests, then deletes exactly the deferred files no
retained snapshot references (after a grace period that covers a publisher between reading a
file's footer and its commit).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io.pyarrow import parquet_file_to_data_file
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of
from pyiceberg.utils.concurrent import ExecutorFactory
from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    and_,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy import Table as SqlTable
from sqlalchemy.exc import IntegrityError

from connectors.errors import TerminalError, TransientError
from connectors.faults import crash_point
from connectors.lake import Lake, epoch_hour, parse_hour_key
from connectors.metastore import FileRecord, Metastore, create_missing_tables
from connectors.spec import DataProductSpec
from connectors.tables.iceberg import IcebergTables

log = logging.getLogger(__name__)

SEQ_PROPERTY = "flowsuite.publish-seq"
DEFAULT_GRACE = timedelta(hours=1)  # a deferred file is deleted no sooner than this after its replacement
MAX_ATTEMPTS = 50

metadata = MetaData()
queue = SqlTable(
    "fs_iceberg_queue",
    metadata,
    Column("product", String(128), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hour", String(16), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("enqueued_at", Double, nullable=False),
    UniqueConstraint("product", "hour", "generation", name="fs_iceberg_queue_hour_gen"),
)
deferred = SqlTable(
    "fs_iceberg_deferred",
    metadata,
    Column("path", String(700), primary_key=True),  # relative to the lake root
    Column("product", String(128), nullable=False, index=True),
    Column("hour", String(16), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("deferred_at", Double, nullable=False),
)


class PublishQueueContendedError(TransientError, RuntimeError):
    """Concurrent publishers kept winning the publish queue's sequence numbers: try again later."""


class HourMismatchError(TerminalError, RuntimeError):
    """A file to publish does not hold exactly the hour it is published for."""


@dataclass
class ExpiryResult:
    expired_snapshots: list[int] = field(default_factory=list)
    deleted_files: list[str] = field(default_factory=list)  # lake-relative data files
    deleted_metadata: int = 0  # manifests and manifest lists of expired snapshots
    kept_deferred: int = 0  # deferred files still referenced (or within the grace period)


@dataclass
class PublishResult:
    product: str
    identifier: str
    published: list[dict] = field(default_factory=list)  # {hour, generation, seq, snapshot_id, files, rows, operation}
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # (hour, generation, why)
    last_seq: int = 0
    snapshot_id: int | None = None
    lost_races: int = 0
    expiry: ExpiryResult | None = None
    duration_s: float = 0.0

    def summary(self) -> str:
        hours = ", ".join(f"{p['hour']} g{p['generation']}" for p in self.published) or "nothing new"
        return f"{self.identifier}: published {hours}; publish sequence {self.last_seq}, snapshot {self.snapshot_id}"


# --- the metastore side ----------------------------------------------------------------------


def ensure_tables(metastore: Metastore) -> None:
    create_missing_tables(metastore.engine, metadata, "flowsuite.iceberg")


def sealed_hours(metastore: Metastore, product: str) -> dict[str, int]:
    """hour → generation of every sealed hour (compacted, marked at that generation, not blocked)."""
    marked = metastore.marked_hours(product)
    return {
        r.hour: r.generation
        for r in metastore.hours(product)
        if r.state == "compacted" and not r.blocked_reason and marked.get(r.hour) == r.generation and r.generation > 0
    }


def enqueue(metastore: Metastore, product: str, sealed: dict[str, int], attempts: int = 20) -> None:
    """Give every sealed (hour, generation) not queued yet the next sequence numbers."""
    for attempt in range(attempts):
        try:
            with metastore.engine.begin() as conn:
                have = set(conn.execute(select(queue.c.hour, queue.c.generation).where(queue.c.product == product)).tuples())
                new = sorted((h, g) for h, g in sealed.items() if (h, g) not in have)
                if not new:
                    return
                top = conn.execute(select(func.coalesce(func.max(queue.c.seq), 0)).where(queue.c.product == product)).scalar()
                now = time.time()
                conn.execute(insert(queue), [
                    {"product": product, "seq": int(top) + i + 1, "hour": h, "generation": g, "enqueued_at": now}
                    for i, (h, g) in enumerate(new)
                ])
            return
        except IntegrityError:  # another publisher took these numbers first: read again
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    raise PublishQueueContendedError(f"{product}: could not assign publish sequence numbers after {attempts} "
                                     "attempts: other publishers kept taking them; the next publish tries again")


def queued(metastore: Metastore, product: str, after: int = 0) -> list[tuple[int, str, int]]:
    with metastore.engine.connect() as conn:
        rows = conn.execute(
            select(queue.c.seq, queue.c.hour, queue.c.generation)
            .where(and_(queue.c.product == product, queue.c.seq > after)).order_by(queue.c.seq)
        ).tuples()
        return [(int(s), h, int(g)) for s, h, g in rows]


def defer_replaced(metastore: Metastore, product: str, replaced: Sequence[FileRecord]) -> list[str]:
    """Of the replaced files, defer the deletion of those a snapshot may reference (compacted
    files of a queued hour generation); returns the paths to delete now."""
    ensure_tables(metastore)
    compacted = [f for f in replaced if f.kind == "compacted"]
    if not compacted:
        return [f.path for f in replaced]
    with metastore.engine.begin() as conn:
        published = set(conn.execute(
            select(queue.c.hour, queue.c.generation)
            .where(and_(queue.c.product == product, queue.c.hour.in_(sorted({f.hour for f in compacted}))))
        ).tuples())
        keep = [f for f in compacted if (f.hour, f.generation) in published]
        known = set(conn.execute(select(deferred.c.path).where(deferred.c.path.in_([f.path for f in keep]))).scalars())
        now = time.time()
        rows = [{"path": f.path, "product": product, "hour": f.hour, "generation": f.generation, "deferred_at": now}
                for f in keep if f.path not in known]
        if rows:
            conn.execute(insert(deferred), rows)
    kept = {f.path for f in keep}
    return [f.path for f in replaced if f.path not in kept]


# --- the table side --------------------------------------------------------------------------


def last_published_seq(table: Table) -> int:
    """The publish sequence of the newest snapshot in the current ancestry that has one."""
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if SEQ_PROPERTY in props:
            return int(props[SEQ_PROPERTY])
    return 0


def publish_sealed_hours(
    spec: DataProductSpec, *, lake: Lake, metastore: Metastore, tables: IcebergTables,
    now: datetime | None = None, expire_after: bool = True, grace: timedelta = DEFAULT_GRACE,
    max_attempts: int = MAX_ATTEMPTS,
) -> PublishResult:
    """Publish every sealed hour not in the table yet (in sequence order), then expire."""
    started = time.monotonic()
    product = spec.name
    ensure_tables(metastore)
    table = tables.ensure_table(spec, spec.sinks.lake.iceberg.retain)
    result = PublishResult(product, ".".join(table.name()))
    enqueue(metastore, product, sealed_hours(metastore, product))
    while True:  # `table` is fresh: just loaded, or as our own commit left it (a stale one fails the CAS)
        last = last_published_seq(table)
        pending = queued(metastore, product, after=last)
        entry = _next_publishable(metastore, product, pending, result)
        if entry is None:
            break
        try:
            published, table = _commit(tables, table, spec, metastore, entry)
            result.published.append(published)
        except CommitFailedException:
            result.lost_races += 1
            if result.lost_races >= max_attempts:
                raise
            time.sleep(random.uniform(0.02, 0.2))
            table = tables.load(product)
    result.last_seq = last_published_seq(table)
    if expire_after:
        result.expiry = expire(spec, lake=lake, metastore=metastore, tables=tables, now=now, grace=grace)
        table = tables.load(product)
    snapshot = table.current_snapshot()
    result.snapshot_id = snapshot.snapshot_id if snapshot else None
    result.duration_s = time.monotonic() - started
    return result


def _next_publishable(metastore: Metastore, product: str, pending: list[tuple[int, str, int]], result: PublishResult):
    """The first pending entry that is still its hour's sealed generation (later ones supersede)."""
    sealed = sealed_hours(metastore, product)
    latest = {h: (s, g) for s, h, g in pending}  # pending is in seq order: the last one wins
    for seq, hour, generation in pending:
        if latest[hour][0] != seq:
            why = f"superseded by generation {latest[hour][1]}"
        elif sealed.get(hour) != generation:
            why = "reopened since it was sealed; published again once resealed"
        else:
            return seq, hour, generation
        if (hour, generation, why) not in result.skipped:
            result.skipped.append((hour, generation, why))
    return None


def _merged_ranges(per_file: Iterable[dict | None]) -> dict[str, list[list[int]]]:
    """The files' offset runs per partition, merged (as in the hour's `_SUCCESS` manifest)."""
    runs: dict[int, list[list[int]]] = {}
    for ranges in per_file:
        for p, rs in (ranges or {}).items():
            runs.setdefault(int(p), []).extend([list(r) for r in rs])
    out: dict[str, list[list[int]]] = {}
    for p, rs in sorted(runs.items()):
        acc: list[list[int]] = []
        for a, b in sorted(rs):
            if acc and a <= acc[-1][1] + 1:
                acc[-1][1] = max(acc[-1][1], b)
            else:
                acc.append([a, b])
        out[str(p)] = acc
    return out


def data_files_of_hour(table: Table, uris: list[str], hour: str) -> list:
    """Iceberg data files for the Parquet files given (their footers read, nothing rewritten),
    checked to hold exactly the one hour they are published for."""
    want = epoch_hour(parse_hour_key(hour))
    # pyiceberg's public per-file conversion (what Table.add_files runs), on pyiceberg's own
    # executor as add_files does: the footers are read in parallel (S3 round trips).
    executor = ExecutorFactory.get_or_create()
    futures = [executor.submit(parquet_file_to_data_file, table.io, table.metadata, uri) for uri in uris]
    try:
        files = [f.result() for f in futures]
    except ValueError as exc:  # pyiceberg: the lower and upper bound fall in different partitions
        raise HourMismatchError(f"a file published as hour {hour} spans more than one hour: {exc}") from None
    for df in files:
        if df.partition[0] != want:
            raise HourMismatchError(f"{df.file_path}: holds hour {df.partition[0]} (epoch hours), published as {hour} ({want})")
    return files


def _commit(tables: IcebergTables, table: Table, spec: DataProductSpec, metastore: Metastore, entry) -> tuple[dict, Table]:
    seq, hour, generation = entry
    live = metastore.live_files(spec.name, hour)
    if any(f.kind != "compacted" or f.generation != generation for f in live):
        raise CommitFailedException(f"{spec.name} {hour}: its files changed while publishing; again")
    uris = [tables.lake_uri(f.path) for f in live]
    old = tables.hour_files(table, hour)
    new_files = data_files_of_hour(table, uris, hour)
    properties = {
        "flowsuite.product": spec.name,
        "flowsuite.hour": hour,
        "flowsuite.generation": str(generation),
        "flowsuite.rows": str(sum(f.rows for f in live)),
        "flowsuite.offset-ranges": json.dumps(_merged_ranges(f.ranges for f in live), separators=(",", ":")),
        SEQ_PROPERTY: str(seq),
    }
    tx = table.transaction()
    update = tx.update_snapshot(snapshot_properties=properties)
    with update.overwrite() if old else update.merge_append() as producer:
        for df in old:
            producer.delete_data_file(df)
        for df in new_files:
            producer.append_data_file(df)
    crash_point("iceberg_before_commit")
    committed = tx.commit_transaction()
    crash_point("iceberg_after_commit")
    snapshot = committed.current_snapshot()
    log.info("%s: published %s generation %d as sequence %d (snapshot %s)", spec.name, hour, generation, seq, snapshot.snapshot_id)
    return {"hour": hour, "generation": generation, "seq": seq, "snapshot_id": snapshot.snapshot_id,
            "files": len(new_files), "rows": int(properties["flowsuite.rows"]), "operation": "overwrite" if old else "append"}, committed


# --- expiry ----------------------------------------------------------------------------------


def expire(
    spec: DataProductSpec, *, lake: Lake, metastore: Metastore, tables: IcebergTables,
    now: datetime | None = None, grace: timedelta = DEFAULT_GRACE, attempts: int = 10,
) -> ExpiryResult:
    """Drop snapshots older than the spec's retention, then the files only they referenced."""
    now = now or datetime.now(UTC)
    ensure_tables(metastore)
    result = ExpiryResult()
    cutoff_ms = int((now - spec.sinks.lake.iceberg.retain).timestamp() * 1000)
    for attempt in range(attempts):
        table = tables.load(spec.name)
        current = table.current_snapshot()
        old = [s for s in table.snapshots() if s.timestamp_ms < cutoff_ms and (current is None or s.snapshot_id != current.snapshot_id)]
        if not old:
            break
        try:
            table.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in old]).commit()
        except CommitFailedException:
            if attempt + 1 == attempts:
                raise
            time.sleep(random.uniform(0.02, 0.2))
            continue
        result.expired_snapshots = [s.snapshot_id for s in old]
        result.deleted_metadata = _delete_unreachable_metadata(tables.load(spec.name), old)
        break
    table = tables.load(spec.name)
    referenced = tables.referenced_paths(table)
    due = now.timestamp() - grace.total_seconds()
    with metastore.engine.connect() as conn:
        rows = conn.execute(select(deferred.c.path, deferred.c.deferred_at).where(deferred.c.product == spec.name)).tuples().all()
    states = metastore.file_states(p for p, _ in rows)
    for path, deferred_at in rows:
        if deferred_at > due or tables.lake_uri(path) in referenced or states.get(path) in ("committed", "pending"):
            result.kept_deferred += 1
            continue
        lake.delete(path)
        crash_point("iceberg_during_expiry_delete")
        with metastore.engine.begin() as conn:
            conn.execute(delete(deferred).where(deferred.c.path == path))
        result.deleted_files.append(path)
    return result


def _delete_unreachable_metadata(table: Table, expired: Iterable) -> int:
    """Manifest lists and manifests of expired snapshots that no retained snapshot reads."""
    reachable: set[str] = set()
    for s in table.snapshots():
        reachable.add(s.manifest_list)
        reachable.update(m.manifest_path for m in s.manifests(table.io))
    doomed: set[str] = set()
    for s in expired:
        doomed.add(s.manifest_list)
        try:
            doomed.update(m.manifest_path for m in s.manifests(table.io))
        except FileNotFoundError:  # an earlier expiry deleted it already
            pass
    n = 0
    for path in sorted(doomed - reachable):
        try:
            table.io.delete(path)
            n += 1
        except FileNotFoundError:
            pass
    return n


# --- lag -------------------------------------------------------------------------------------


def publish_lag_hours(metastore: Metastore, tables: IcebergTables, product: str) -> tuple[int, int]:
    """(lag in hours, sealed hours not published at their current generation).

    The lag: from the newest sealed hour back to the newest hour up to which every sealed hour
    is in the table at its sealed generation (0: the table is up to date)."""
    sealed = sealed_hours(metastore, product)
    if not sealed:
        return 0, 0
    last = last_published_seq(tables.load(product)) if tables.exists(product) else 0
    done: set[tuple[str, int]] = set()
    if last:  # read only: a metastore that never published has no queue table
        with metastore.engine.connect() as conn:
            done = set(conn.execute(
                select(queue.c.hour, queue.c.generation).where(and_(queue.c.product == product, queue.c.seq <= last))
            ).tuples())
    missing = sorted(h for h, g in sealed.items() if (h, g) not in done)
    if not missing:
        return 0, 0
    newest = max(epoch_hour(parse_hour_key(h)) for h in sealed)
    oldest_missing = epoch_hour(parse_hour_key(missing[0]))
    return newest - oldest_missing + 1, len(missing)
