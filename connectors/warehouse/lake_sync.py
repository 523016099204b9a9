"""Syncing a product from the lake: read committed windows past the sink's offsets (retrying when
a concurrent compaction swapped a file away), reduce per key, upsert, and follow quarantine replays."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.dataset as pads

from connectors.formats import lake_schema
from connectors.metastore import FileRecord, Metastore
from connectors.spec import DataProductSpec
from connectors.warehouse.results import SyncResult
from connectors.warehouse.sink import (
    REPLAY_SLOT,
    WarehouseError,
    WarehouseSink,
)

log = logging.getLogger(__name__)

READ_RETRIES = 5  # a file swapped away by a concurrent compaction: re-list and read again


def _file_covers(f: FileRecord, partition: int, lo: int, hi: int) -> bool:
    """Can `f` hold rows of `partition` with offsets in [lo, hi)?"""
    if f.ranges:
        runs = f.ranges.get(partition) or f.ranges.get(str(partition))  # type: ignore[call-overload]
        if not runs:
            return False
        return any(first < hi and last >= lo for first, last in runs)
    if f.partition is not None and f.partition != partition:
        return False
    low = f.min_offset if f.min_offset is not None else f.start_offset
    high = f.max_offset if f.max_offset is not None else (f.end_offset - 1 if f.end_offset is not None else None)
    if low is not None and low >= hi:
        return False
    return not (high is not None and high < lo)


def _partitions_of(f: FileRecord) -> set[int]:
    if f.ranges:
        return {int(p) for p in f.ranges}
    return {f.partition} if f.partition is not None else set()


def read_window(
    spec: DataProductSpec, lake, files: list[FileRecord], window: dict[int, tuple[int, int]]
) -> tuple[pa.Table, int]:
    """Rows of the live files whose (partition, offset) falls in the window; (rows, files read).

    Predicate pushdown: the filter on `_partition`/`_offset` lets Parquet skip row groups by
    their statistics. Files written before a field was added get that column as nulls.
    """
    schema = lake_schema(spec)
    pieces, n_files = [], 0
    for f in files:
        parts = [(p, lo, hi) for p, (lo, hi) in window.items() if _file_covers(f, p, lo, hi)]
        if not parts:
            continue
        expr = None
        for p, lo, hi in parts:
            e = (pads.field("_partition") == p) & (pads.field("_offset") >= lo) & (pads.field("_offset") < hi)
            expr = e if expr is None else expr | e
        dataset = pads.dataset(lake.full(f.path), filesystem=lake.fs, format="parquet")
        present = [n for n in schema.names if n in dataset.schema.names]
        table = dataset.to_table(columns=present, filter=expr)
        for name in schema.names:
            if name not in present:
                table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
        pieces.append(table.select(schema.names).cast(schema))
        n_files += 1
    if not pieces:
        return schema.empty_table(), 0
    return pa.concat_tables(pieces), n_files


def plan_windows(
    start: dict[int, int], target: dict[int, int], batch_rows: int
) -> Iterator[dict[int, tuple[int, int]]]:
    """Offset windows per partition of at most `batch_rows` offsets in total.

    An offset holds at most one row (quarantined offsets hold none), so a window of N
    offsets never holds more than N rows: memory per batch is bounded without counting.
    """
    pos = dict(start)
    while True:
        active = sorted(p for p in target if pos.get(p, 0) < target[p])
        if not active:
            return
        width = max(1, batch_rows // len(active))
        yield {p: (pos.get(p, 0), min(target[p], pos.get(p, 0) + width)) for p in active}
        for p in active:
            pos[p] = min(target[p], pos.get(p, 0) + width)


def _read_live_window(spec, lake, metastore: Metastore, window: dict[int, tuple[int, int]],
                      hour: str | None = None) -> pa.Table:
    """The committed rows of `window` (per partition [lo, hi)) from the live files, of one
    hour when given. A concurrent compaction may swap a file away between listing and
    reading: then the files are listed again."""
    for attempt in range(READ_RETRIES):
        files = metastore.live_files(spec.name, hour=hour)
        try:
            return read_window(spec, lake, files, window)[0]
        except (FileNotFoundError, OSError) as exc:
            if attempt + 1 == READ_RETRIES:
                raise WarehouseError(f"{spec.name}: lake files kept changing while reading: {exc}") from None
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _apply_replays(spec, lake, metastore: Metastore, sink: WarehouseSink, current: dict[int, int],
                   blocked: set[str], result: SyncResult) -> None:
    """Bring in quarantine replays since the sink's replay watermark, one transaction each.

    A replay's records carry their original offsets; those below the partition's sink offset
    never come with the offset windows, so the replay's offset span is read from the live
    files of its hour. Rows in that span that were synced before are applied again, which the
    version guard makes a no-op (counted as stale); records at or above the sink offset come
    with the windows. A replay into a blocked hour waits, and so do the replays after it.
    """
    slot = sink.replay_watermark()
    for replay in metastore.replays_since(spec.name, slot or 0):
        if replay.hour in blocked:
            break
        lo, hi = replay.min_offset, min(replay.max_offset + 1, current.get(replay.partition, 0))
        rows = lake_schema(spec).empty_table()
        if hi > lo:
            rows = _read_live_window(spec, lake, metastore, {replay.partition: (lo, hi)}, hour=replay.hour)
        counts = sink.apply(rows, advance_to={REPLAY_SLOT: replay.id + 1}, expected={REPLAY_SLOT: slot})
        slot = replay.id + 1
        result.replays_applied += 1
        result.rows_read += rows.num_rows
        result.add_counts(counts)


def sync(
    spec: DataProductSpec,
    *,
    lake,
    metastore: Metastore,
    sink: WarehouseSink | None = None,
    url: str | None = None,
    batch_rows: int | None = None,
    progress: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Bring the product's warehouse table up to the lake's committed offsets.

    Snapshots `Metastore.committed_offsets` first (a landing committing meanwhile is left
    for the next sync, never half-applied), then works through offset windows from the
    sink's offsets to that snapshot, one warehouse transaction per window. Hours a blocking
    quality check stopped (`blocked_reason` in the metastore) are a wall: each partition
    stops at the first offset of a blocked hour until the owner clears it.
    """
    started = time.monotonic()
    own = sink is None
    if sink is None:
        if url is None:
            raise ValueError("give a warehouse url or a sink")
        sink = WarehouseSink(spec, url)
    db = spec.sinks.database
    batch_rows = batch_rows or (db.batch_rows if db else 50_000)
    result = SyncResult(product=spec.name, table=sink.table_name, dialect=sink.dialect, url=sink.safe_url)
    try:
        result.added_columns = sink.ensure_table()
        before = sink.sink_offsets()
        result.offsets_before = dict(before)
        target = {p: s.next_offset for p, s in metastore.committed_offsets(spec.name).items()}
        # A blocked hour stops each partition at its first offset in that hour.
        blocked = [h.hour for h in metastore.hours(spec.name) if h.blocked_reason]
        if blocked:
            result.blocked_hours = blocked
            walls: dict[int, int] = {}
            for f in metastore.live_files(spec.name):
                if f.hour not in blocked:
                    continue
                for p in _partitions_of(f):
                    first = (min(r[0] for r in f.ranges[p]) if f.ranges and p in f.ranges
                             else f.min_offset if f.min_offset is not None else f.start_offset)
                    if first is not None:
                        walls[p] = min(walls.get(p, first), first)
            target = {p: min(n, walls.get(p, n)) for p, n in target.items()}
        result.target_offsets = dict(target)
        for p, n in before.items():
            if p in target and n > target[p] and not blocked:
                log.warning("%s: sink offset of partition %d (%d) is past the lake's committed offset (%d); "
                            "the lake's history was reset? nothing is synced for it", spec.name, p, n, target[p])
        current = dict(before)
        for window in plan_windows(before, target, batch_rows):
            rows = _read_live_window(spec, lake, metastore, window)
            advance = {p: hi for p, (_lo, hi) in window.items()}
            counts = sink.apply(rows, advance_to=advance, expected={p: current.get(p) for p in advance})
            current.update(advance)
            result.rows_read += rows.num_rows
            result.batches += 1
            result.add_counts(counts)
            if progress:
                progress(result)
        _apply_replays(spec, lake, metastore, sink, current, set(blocked), result)
        result.offsets_after = dict(current)
        result.table_rows = sink.row_count()
    finally:
        result.duration_s = time.monotonic() - started
        if own:
            sink.dispose()
    return result
