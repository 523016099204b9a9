"""Hourly compaction: rewrite an hour's small files into few large ones, checked, then swap.

`compact_hour` turns the live files of one event-time hour (the landed ones and the previous
generation's compacted ones) into `part-g<generation>-<n>.parquet`:

1. claim `hour/<hour>` in the metastore (a lease renewed while it works; a dead claim is taken
   over and the pending outputs it left are deleted first);
2. read the live files — never a listing — sort the rows by event time, then key, then
   (partition, offset) for a deterministic order, and write each output file after
   registering it `pending` (zstd, row groups of at least 100k rows when the hour has them);
3. **verify** before anything becomes visible, in two links: (a) the sorted rows hold
   exactly the input rows — equal row count, equal multiset of (_partition, _offset), equal
   order-free checksum of every column of every row (DuckDB `sum(hash(...))`, run in a
   background thread beside the sort and the write); (b) each output file, read back from
   the lake in full, equals the sorted rows it was written from value for value and in
   order (`Table.equals`, exact). So what is checked is what is durable: (a) catches a sort
   or conform step that lost, duplicated or changed rows, (b) a writer bug, a truncated or
   corrupted file;
4. `Metastore.swap_hour` in one transaction (new files live, exactly the inputs replaced);
5. delete the replaced files from the lake, then write `_SUCCESS` (a JSON manifest) when the
   hour is closed (its end + allowed lateness has passed), then forget the replaced rows.

Step 5 is ordered so a crash in it always leaves `replaced` rows behind, which is how the
schedule and the next compaction know there is a tail to finish (delete, marker, forget).

**Memory.** When the hour fits in one output file (the usual case: target 128 MB) it is read,
sorted and written in memory — one output file's rows, which is the bound asked for. A bigger
hour is sorted globally without holding it: the sort columns alone (event time, key,
partition, offset ≈ 60 bytes a row) are read and ranked, each row is assigned to the output
file its rank falls in, one streaming pass over the inputs spills the rows into one local
temporary file per output, and each output is then sorted and written alone. Outputs are thus
disjoint, ordered ranges of event time (readers prune them by statistics), at the price of
writing the hour twice (once to local spill).

Dagster-free; `assets/hourly.py`, the CLI and the schedule call it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from connectors.faults import crash_point
from connectors.formats import lake_schema
from connectors.lake import SUCCESS, Lake, hour_dir, normalize_hour, parse_hour_key
from connectors.metastore import (
    ClaimLostError,
    FileRecord,
    FileStats,
    HourRecord,
    Metastore,
    hour_resource,
)
from connectors.spec import DataProductSpec

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 30.0
MIN_ROW_GROUP_ROWS = 100_000
MAX_RANGES_PER_PARTITION = 1000  # beyond this, the smallest gaps are bridged (ranges then cover)
READ_BATCH_ROWS = 65_536


class HourBlockedError(RuntimeError):
    """A blocking quality check failed on data of this hour: compaction leaves it alone."""

    def __init__(self, product: str, hour: str, reason: str):
        self.product, self.hour, self.reason = product, hour, reason
        super().__init__(
            f"{product}: hour {hour} is blocked by a failing quality gate and is not compacted: {reason} "
            "(clear it with Metastore.unblock_hours once the data is fixed)"
        )


class VerificationError(RuntimeError):
    """The rewritten files do not hold exactly the input rows: nothing was swapped."""


# --- small helpers other modules share ------------------------------------------------------


def hour_closes_at(spec: DataProductSpec, hour: str) -> datetime:
    """When the hour is closed: its end plus the product's allowed lateness."""
    return parse_hour_key(hour) + timedelta(hours=1) + spec.partitioning.allowed_lateness


def hour_is_closed(spec: DataProductSpec, hour: str, now: datetime | None = None) -> bool:
    return (now or datetime.now(UTC)) >= hour_closes_at(spec, hour)


def compacted_file_name(generation: int, n: int) -> str:
    return f"part-g{int(generation)}-{int(n)}.parquet"


def offset_ranges(partitions: np.ndarray, offsets: np.ndarray, max_runs: int = MAX_RANGES_PER_PARTITION) -> dict[int, list[list[int]]]:
    """{partition: [[first, last], ...]}: contiguous runs of the offsets given (inclusive).

    Exact while a partition has at most `max_runs` runs; beyond that the smallest gaps are
    bridged, so the ranges still cover every offset but may span offsets not in the set.
    """
    if len(offsets) == 0:
        return {}
    parts, offs = sorted_pairs(np.asarray(partitions, np.int64), np.asarray(offsets, np.int64))
    return ranges_of_sorted(parts, offs, max_runs)


def sorted_pairs(partitions: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(partition, offset) pairs in ascending order, duplicates kept (a multiset, exactly).

    Packs each pair into one int64 (partition << 40 | offset) and sorts that when every pair
    fits — one numeric sort instead of a two-key lexsort; otherwise lexsort.
    """
    if len(offsets) == 0:
        return partitions.astype(np.int64), offsets.astype(np.int64)
    if partitions.min() >= 0 and partitions.max() < (1 << 22) and offsets.min() >= 0 and offsets.max() < (1 << 40):
        packed = np.sort((partitions.astype(np.int64) << 40) | offsets.astype(np.int64))
        return packed >> 40, packed & ((1 << 40) - 1)
    order = np.lexsort((offsets, partitions))
    return partitions[order].astype(np.int64), offsets[order].astype(np.int64)


def ranges_of_sorted(parts: np.ndarray, offs: np.ndarray, max_runs: int = MAX_RANGES_PER_PARTITION) -> dict[int, list[list[int]]]:
    """`offset_ranges` of pairs already in ascending (partition, offset) order (no hashing)."""
    result: dict[int, list[list[int]]] = {}
    if len(offs) == 0:
        return result
    bounds = np.flatnonzero(np.diff(parts)) + 1
    for lo, hi in zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [len(parts)])), strict=True):
        o = offs[lo:hi]
        o = o[np.concatenate(([True], np.diff(o) != 0))]  # unique (sorted)
        breaks = np.nonzero(np.diff(o) != 1)[0]
        if len(breaks) + 1 > max_runs:
            gaps = o[breaks + 1] - o[breaks]
            breaks = np.sort(breaks[np.argsort(-gaps, kind="stable")[: max_runs - 1]])
        starts = np.concatenate(([0], breaks + 1))
        ends = np.concatenate((breaks, [len(o) - 1]))
        result[int(parts[lo])] = [[int(o[s]), int(o[e])] for s, e in zip(starts, ends, strict=True)]
    return result


def merge_ranges(per_file: Iterable[dict[int, list[list[int]]] | None]) -> dict[int, list[list[int]]]:
    """Per partition, the offset runs of several files merged into sorted, non-adjacent [first, last] spans."""
    merged: dict[int, list[list[int]]] = {}
    for ranges in per_file:
        for p, runs in (ranges or {}).items():
            merged.setdefault(int(p), []).extend([list(r) for r in runs])
    out: dict[int, list[list[int]]] = {}
    for p, runs in sorted(merged.items()):
        runs.sort()
        acc: list[list[int]] = []
        for a, b in runs:
            if acc and a <= acc[-1][1] + 1:
                acc[-1][1] = max(acc[-1][1], b)
            else:
                acc.append([a, b])
        out[p] = acc
    return out


def sort_columns(spec: DataProductSpec, schema: pa.Schema) -> list[str]:
    """Event time, then key, then (partition, offset): a total, deterministic order."""
    names = set(schema.names)
    et = spec.event_time.field if spec.event_time.source == "field" else None
    cols = [et if et and et in names else "_timestamp"]
    keys = [k for k in spec.key if k in names] or (["_key"] if "_key" in names else [])
    cols += [k for k in keys if k not in cols]
    return cols + ["_partition", "_offset"]


# --- results --------------------------------------------------------------------------------


@dataclass
class CompactionResult:
    product: str
    hour: str
    status: str  # compacted | noop
    reason: str  # what happened, in words
    generation: int
    files_before: list[str] = field(default_factory=list)
    files_after: list[str] = field(default_factory=list)
    rows: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    file_rows: dict[str, int] = field(default_factory=dict)
    file_bytes: dict[str, int] = field(default_factory=dict)
    offset_ranges: dict[int, list[list[int]]] = field(default_factory=dict)
    marker_written: bool = False
    marker_reason: str = ""
    source: str = "live_files"  # live_files | kafka (replay)
    took_over_from: str | None = None
    deleted_pending: list[str] = field(default_factory=list)
    cleaned_replaced: list[str] = field(default_factory=list)
    checksum: int | None = None
    run_id: str | None = None
    note: str = ""  # replay: where the rows came from and why
    duration_s: float = 0.0

    def summary(self) -> str:
        marker = "marker written" if self.marker_written else f"no marker ({self.marker_reason})"
        if self.status == "noop":
            return f"{self.product} {self.hour}: nothing to do — {self.reason}; {marker}"
        return (
            f"{self.product} {self.hour}: generation {self.generation}, {len(self.files_before)} → "
            f"{len(self.files_after)} files, {self.rows} rows, {self.bytes_before} → {self.bytes_after} bytes; {marker}"
        )


@dataclass
class _Output:
    path: str
    rows: int
    bytes: int
    ranges: dict[int, list[list[int]]]
    min_offset: int | None
    max_offset: int | None

    def stats(self) -> FileStats:
        return FileStats(
            path=self.path, rows=self.rows, bytes=self.bytes, min_offset=self.min_offset,
            max_offset=self.max_offset, ranges=self.ranges,
        )


class LeaseKeeper:
    """Renews the hour claim in the background; `check()` raises once it was lost."""

    def __init__(self, metastore: Metastore, product: str, resource: str, owner: str, lease_s: float):
        self.metastore, self.product, self.resource, self.owner, self.lease_s = metastore, product, resource, owner, lease_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{resource}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                if not self.metastore.renew(self.product, self.resource, self.owner, self.lease_s):
                    self.lost = True
                    return
            except Exception:  # noqa: BLE001 - a metastore blip; the next renewal retries
                log.warning("renewing %s failed; retrying", self.resource, exc_info=True)

    def check(self) -> None:
        if self.lost:
            raise ClaimLostError(f"{self.product}: claim {self.resource} was lost (lease not renewed); nothing swapped")


# --- fingerprints ---------------------------------------------------------------------------


class Fingerprint:
    """Row count, an order-free checksum of all values, and the (partition, offset) pairs."""

    def __init__(self, columns: Sequence[str]):
        self.columns = list(columns)
        self.rows = 0
        self.checksum = 0
        self._parts: list[np.ndarray] = []
        self._offs: list[np.ndarray] = []
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None
        self._con = duckdb.connect()
        cols = ", ".join('"' + c.replace('"', '""') + '"' for c in self.columns)
        self._sql = f"SELECT count(*), coalesce(sum(hash({cols})), 0)::HUGEINT FROM fingerprint_rows"

    def add(self, table: pa.Table | pa.RecordBatch) -> None:
        if table.num_rows == 0:
            return
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        self._con.register("fingerprint_rows", table.select(self.columns))
        ((n, s),) = self._con.execute(self._sql).fetchall()
        self._con.unregister("fingerprint_rows")
        self.rows += int(n)
        self.checksum = (self.checksum + int(s)) % (1 << 128)
        self._parts.append(table.column("_partition").to_numpy().astype(np.int64))
        self._offs.append(table.column("_offset").to_numpy().astype(np.int64))
        self._sorted = None

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The (partition, offset) multiset, sorted (computed once)."""
        if self._sorted is None:
            parts = np.concatenate(self._parts) if self._parts else np.empty(0, np.int64)
            offs = np.concatenate(self._offs) if self._offs else np.empty(0, np.int64)
            self._sorted = sorted_pairs(parts, offs)
        return self._sorted

    def close(self) -> None:
        self._con.close()


def verify_same_rows(inputs: Fingerprint, outputs: Fingerprint, what: str) -> None:
    """Raise VerificationError unless the two sides hold exactly the same rows."""
    if inputs.rows != outputs.rows:
        raise VerificationError(f"{what}: {outputs.rows} rows written for {inputs.rows} read; nothing swapped")
    ip, io = inputs.pairs()
    op, oo = outputs.pairs()
    if not (np.array_equal(ip, op) and np.array_equal(io, oo)):
        raise VerificationError(f"{what}: the (partition, offset) multiset changed; nothing swapped")
    if inputs.checksum != outputs.checksum:
        raise VerificationError(f"{what}: the values checksum changed; nothing swapped")


# --- the rewrite core -----------------------------------------------------------------------

Source = tuple[pafs.FileSystem, str, int]  # filesystem, full path, size in bytes


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The product's lake schema; columns missing in an older file become nulls."""
    if table.schema.equals(schema):
        return table
    cols = [
        table.column(f.name).cast(f.type) if f.name in table.schema.names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(cols, schema=schema)


def _read_source(src: Source, columns: list[str] | None = None) -> pa.Table:
    fs, path, _ = src
    return pq.read_table(path, filesystem=fs, columns=columns)


def _iter_source(src: Source, schema: pa.Schema) -> Iterable[pa.Table]:
    fs, path, _ = src
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS):
            yield conform(pa.Table.from_batches([batch]), schema)


def _row_groups(rows: int, target: int) -> int:
    """Rows per row group so that every group holds ≥ target when the file has that many."""
    groups = max(1, rows // target)
    return math.ceil(rows / groups) if rows else target


def rewrite_hour(
    spec: DataProductSpec,
    hour: str,
    sources: Sequence[Source],
    *,
    lake: Lake,
    metastore: Metastore,
    run_id: str,
    generation: int,
    target_file_bytes: int,
    row_group_rows: int,
    keeper: LeaseKeeper | None = None,
    spill_dir: str | None = None,
) -> tuple[list[_Output], Fingerprint]:
    """Write the rows of `sources` sorted into pending `part-g<generation>-<n>` files of the
    hour, and verify them; returns the outputs and the inputs' fingerprint."""
    schema = lake_schema(spec)
    order_by = [(c, "ascending") for c in sort_columns(spec, schema)]
    inputs = Fingerprint(schema.names)
    outputs = Fingerprint(schema.names)
    written: list[_Output] = []
    folder = hour_dir(spec.name, hour)
    resource = hour_resource(hour)
    total_bytes = sum(s[2] for s in sources)
    n_out = max(1, math.ceil(total_bytes / max(1, target_file_bytes)))

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compact-fingerprint")
    pending: list[Future] = []

    def fingerprint_later(fp: Fingerprint, table: pa.Table) -> None:
        # DuckDB's checksum releases the GIL: it runs beside the sort or the Parquet write.
        # One at a time per fingerprint (each has one DuckDB connection), in submission order.
        pending.append(pool.submit(fp.add, table))

    def wait_fingerprints() -> None:
        while pending:
            pending.pop(0).result()

    def write_output(n: int, table: pa.Table) -> None:
        """Write one sorted output and check the file: what is durable equals `table` exactly.

        `table`'s own fingerprint (rows, (partition, offset) multiset, values checksum) is
        what `verify_same_rows` compares with the inputs'; the file read back from the lake
        must equal `table` value for value, in order (`Table.equals`), which is exact where
        a checksum of the read-back file was only probabilistic.
        """
        if keeper is not None:
            keeper.check()
        fingerprint_later(outputs, table)
        path = f"{folder}/{compacted_file_name(generation, n)}"
        metastore.register_pending(
            path, product=spec.name, kind="compacted", hour=hour, claim=resource, run_id=run_id, generation=generation,
        )
        crash_point("compact_after_register")
        rg = _row_groups(table.num_rows, row_group_rows)
        with lake.open_parquet_writer(path, schema) as writer:
            for start in range(0, table.num_rows, rg):
                writer.write(table.slice(start, rg), rg)
        crash_point("compact_after_write")
        back = lake.read_table(path)  # verify what is durable, not what was in memory
        if back.num_rows != table.num_rows or not back.equals(table):
            raise VerificationError(
                f"{spec.name} {hour} generation {generation}: {path} read back from the lake differs from the rows "
                f"written ({back.num_rows} rows read for {table.num_rows}); nothing swapped"
            )
        del back
        parts, offs = sorted_pairs(table.column("_partition").to_numpy().astype(np.int64),
                                   table.column("_offset").to_numpy().astype(np.int64))
        written.append(
            _Output(
                path=path, rows=table.num_rows, bytes=writer.bytes, ranges=ranges_of_sorted(parts, offs),
                min_offset=int(offs.min()) if len(offs) else None, max_offset=int(offs.max()) if len(offs) else None,
            )
        )
        wait_fingerprints()

    try:
        if n_out == 1:
            tables = []
            for src in sources:
                tables.append(conform(_read_source(src), schema))
            table = pa.concat_tables(tables) if tables else schema.empty_table()
            del tables
            fingerprint_later(inputs, table)  # one checksum query for the hour, beside the sort
            write_output(0, table.sort_by(order_by) if table.num_rows else table)
            del table
        else:
            _rewrite_spilled(sources, schema, order_by, n_out, inputs, write_output, keeper, spill_dir)
        wait_fingerprints()
        verify_same_rows(inputs, outputs, f"{spec.name} {hour} generation {generation}")
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)  # no checksum may still use a connection being closed
        outputs.close()
        inputs.close()
    return written, inputs


def _rewrite_spilled(sources, schema, order_by, n_out, inputs, write_output, keeper, spill_dir) -> None:
    """The big-hour path: rank by the sort columns, spill per output, sort each output alone."""
    key_cols = [c for c, _ in order_by]
    key_tables = [_conform_keys(_read_source(src, key_cols), schema, key_cols) for src in sources]
    sizes = [t.num_rows for t in key_tables]
    keys = pa.concat_tables(key_tables)
    del key_tables
    total = keys.num_rows
    order = pc.sort_indices(keys, sort_keys=order_by).to_numpy()
    del keys
    rows_per_file = max(1, math.ceil(total / n_out))
    bucket_of = np.empty(total, np.int64)
    bucket_of[order] = np.arange(total, dtype=np.int64) // rows_per_file
    del order
    with tempfile.TemporaryDirectory(prefix="flowsuite-compact-", dir=spill_dir) as tmp:
        spills: dict[int, pq.ParquetWriter] = {}
        base = 0
        for src, size in zip(sources, sizes, strict=True):
            pos = base
            for chunk in _iter_source(src, schema):
                if keeper is not None:
                    keeper.check()
                inputs.add(chunk)
                buckets = bucket_of[pos : pos + chunk.num_rows]
                pos += chunk.num_rows
                for b in np.unique(buckets):
                    part = chunk.filter(pa.array(buckets == b))
                    w = spills.get(int(b))
                    if w is None:
                        w = spills[int(b)] = pq.ParquetWriter(os.path.join(tmp, f"{int(b)}.parquet"), schema, compression="none")
                    w.write_table(part)
            if pos - base != size:
                raise VerificationError(f"{src[1]} changed while it was compacted ({size} then {pos - base} rows)")
            base += size
        for w in spills.values():
            w.close()
        for n, b in enumerate(sorted(spills)):
            table = pq.read_table(os.path.join(tmp, f"{b}.parquet"))
            write_output(n, table.sort_by(order_by))
            del table
            os.unlink(os.path.join(tmp, f"{b}.parquet"))


def _conform_keys(table: pa.Table, schema: pa.Schema, key_cols: list[str]) -> pa.Table:
    return conform(table, pa.schema([schema.field(c) for c in key_cols]))


# --- compaction of one hour -----------------------------------------------------------------


def sources_of(lake: Lake, files: Sequence[FileRecord]) -> list[Source]:
    return [(lake.fs, lake.full(f.path), int(f.bytes or 0)) for f in files]


def compact_hour(
    spec: DataProductSpec,
    hour: str,
    *,
    lake: Lake,
    metastore: Metastore,
    run_id: str | None = None,
    is_dead: Callable[[str], bool] | None = None,
    now: datetime | None = None,
    force: bool = False,
    lease_s: float = DEFAULT_LEASE_S,
    target_file_bytes: int | None = None,
    spill_dir: str | None = None,
    rebuild: Callable[..., tuple[list[_Output], Fingerprint, str, str]] | None = None,
) -> CompactionResult:
    """Compact one hour (see the module docstring). Idempotent: an hour already compacted with
    no new files is a no-op that says so (and finishes an interrupted tail, marker included).

    Args:
        hour: '2026-11-26-10' or a Dagster key '2026-11-26-10:00'.
        run_id: recorded with the claim and the files (the Dagster run id).
        is_dead: says whether the run holding a claim failed, to take it over before its lease ends.
        now: the clock deciding whether the hour is closed (tests); default the real time.
        force: write a new generation even when nothing changed (a rebuild).
        target_file_bytes: size of output files (default the spec's target_file_size_mb).
        rebuild: replaces "read the live files" as the source of rows (replay uses it).
    Raises:
        HourBlockedError: a quality gate blocked the hour. ClaimHeldError: another live run
        compacts it. VerificationError: the rewrite did not hold exactly the input rows.
    """
    started = time.monotonic()
    hour = normalize_hour(hour)
    run_id = run_id or f"adhoc-{uuid.uuid4().hex[:12]}"
    product = spec.name
    record = metastore.hour(product, hour)
    if record is not None and record.blocked_reason:
        raise HourBlockedError(product, hour, record.blocked_reason)
    resource = hour_resource(hour)
    owner = uuid.uuid4().hex
    takeover = metastore.claim(product, resource, owner, run_id, lease_s, is_dead=is_dead, on_delete=lake.delete)
    if takeover.previous_run_id:
        log.warning(
            "%s %s: took over the compaction claim from run %s; deleted %d pending file(s)",
            product, hour, takeover.previous_run_id, len(takeover.pending_files),
        )
    swapped = False
    try:
        with LeaseKeeper(metastore, product, resource, owner, lease_s) as keeper:
            record = metastore.hour(product, hour)
            if record is not None and record.blocked_reason:
                raise HourBlockedError(product, hour, record.blocked_reason)
            # An interrupted tail of an earlier compaction: its replaced files go first.
            leftovers = [f.path for f in metastore.files_in_states(product, ["replaced"]) if f.hour == hour]
            for path in leftovers:
                lake.delete(path)
            live = metastore.live_files(product, hour)
            landed = [f for f in live if f.kind == "landed"]
            result = CompactionResult(
                product=product, hour=hour, status="noop", reason="", generation=record.generation if record else 0,
                files_before=[f.path for f in live], bytes_before=sum(f.bytes for f in live),
                took_over_from=takeover.previous_run_id, deleted_pending=list(takeover.pending_files),
                cleaned_replaced=leftovers, source="live_files", run_id=run_id,
            )
            if not live:
                result.reason = "no live files in this hour (nothing landed, or only quarantined records)"
                result.marker_reason = "nothing to mark"
                metastore.release(product, resource, owner)
                metastore.drop_replaced(leftovers)
                result.duration_s = time.monotonic() - started
                return result
            if not landed and not force and record is not None and record.state == "compacted":
                result.reason = f"already compacted at generation {record.generation}; no new files"
                result.files_after = [f.path for f in live]
                result.rows = sum(f.rows for f in live)
                result.bytes_after = result.bytes_before
                result.file_rows = {f.path: f.rows for f in live}
                result.file_bytes = {f.path: f.bytes for f in live}
                result.offset_ranges = merge_ranges(f.ranges for f in live)
                metastore.release(product, resource, owner)
                swapped = True  # nothing of ours is pending
                _finish_tail(spec, hour, lake, metastore, result, live_records=live, now=now, generation=record.generation)
                metastore.drop_replaced(leftovers)
                result.duration_s = time.monotonic() - started
                return result

            generation = max([record.generation if record else 0, *(f.generation for f in live)]) + 1
            target = target_file_bytes or spec.sinks.lake.target_file_size_mb * 1024 * 1024
            row_group_rows = max(MIN_ROW_GROUP_ROWS, spec.sinks.lake.row_group_rows)
            if rebuild is not None:
                outputs, fingerprint, source, note = rebuild(
                    live=live, generation=generation, keeper=keeper, target_file_bytes=target,
                    row_group_rows=row_group_rows, run_id=run_id,
                )
                result.source, result.note = source, note
            else:
                outputs, fingerprint = rewrite_hour(
                    spec, hour, sources_of(lake, live), lake=lake, metastore=metastore, run_id=run_id,
                    generation=generation, target_file_bytes=target, row_group_rows=row_group_rows,
                    keeper=keeper, spill_dir=spill_dir,
                )
            keeper.check()
            crash_point("compact_before_swap")
            metastore.swap_hour(
                product=product, hour=hour, owner=owner, replaced=[f.path for f in live],
                new_files=[o.stats() for o in outputs], generation=generation,
            )
            swapped = True
        crash_point("compact_after_swap")
        result.status = "compacted"
        result.generation = generation
        result.files_after = [o.path for o in outputs]
        result.rows = fingerprint.rows
        result.checksum = fingerprint.checksum
        result.bytes_after = sum(o.bytes for o in outputs)
        result.file_rows = {o.path: o.rows for o in outputs}
        result.file_bytes = {o.path: o.bytes for o in outputs}
        result.offset_ranges = merge_ranges(o.ranges for o in outputs)
        result.reason = f"{len(live)} file(s) ({len(landed)} landed) rewritten as generation {generation}"
        if live:
            lake.delete(live[0].path)
            crash_point("compact_during_delete")
            lake.delete_many(f.path for f in live[1:])  # one folder listing, not one per file
        _finish_tail(spec, hour, lake, metastore, result, outputs=outputs, now=now, generation=generation)
        metastore.drop_replaced([f.path for f in live] + leftovers)
        crash_point("compact_after_drop")
        result.duration_s = time.monotonic() - started
        return result
    except BaseException:
        if not swapped:
            _abandon(product, resource, owner, lake, metastore)
        raise


def _abandon(product: str, resource: str, owner: str, lake: Lake, metastore: Metastore) -> None:
    """A compaction that fails cleanly leaves no pending outputs and frees its claim."""
    try:
        claim = next((c for c in metastore.claims_of(product) if c["resource"] == resource), None)
        if claim is None or claim["owner"] != owner:
            return  # taken over: the new owner cleans up
        pending = metastore.pending_files(product, resource)
        for path in pending:
            lake.delete(path)
        metastore.forget_files(pending, only_pending=True)
        metastore.release(product, resource, owner)
    except Exception:  # noqa: BLE001 - the lease expires and the next claimant cleans up
        log.warning("%s: cleaning up after a failed compaction of %s failed", product, resource, exc_info=True)


def _finish_tail(
    spec: DataProductSpec,
    hour: str,
    lake: Lake,
    metastore: Metastore,
    result: CompactionResult,
    *,
    outputs: Sequence[_Output] | None = None,
    live_records: Sequence[FileRecord] | None = None,
    now: datetime | None = None,
    generation: int,
) -> None:
    """Write `_SUCCESS` if the hour is closed and still this generation, compacted.

    Check, write, check again: a landing that reopens the hour commits, then deletes the
    marker; if its commit came before our second check we delete the marker ourselves,
    otherwise its delete comes after our write. Either way no marker survives a reopen.
    """
    marker = f"{hour_dir(spec.name, hour)}/{SUCCESS}"
    if not hour_is_closed(spec, hour, now):
        result.marker_reason = f"hour still open until {hour_closes_at(spec, hour):%Y-%m-%d %H:%M} UTC (end + allowed lateness)"
        return

    def still_ours(rec: HourRecord | None) -> bool:
        return rec is not None and rec.state == "compacted" and rec.generation == generation and not rec.blocked_reason

    if not still_ours(metastore.hour(spec.name, hour)):
        result.marker_reason = "the hour changed after the swap (late data landed); the next compaction marks it"
        return
    if outputs is not None:
        files = [{"path": o.path, "name": o.path.rsplit("/", 1)[-1], "rows": o.rows, "bytes": o.bytes} for o in outputs]
        ranges = merge_ranges(o.ranges for o in outputs)
    else:
        recs = list(live_records or [])
        files = [{"path": f.path, "name": f.path.rsplit("/", 1)[-1], "rows": f.rows, "bytes": f.bytes} for f in recs]
        ranges = merge_ranges(f.ranges for f in recs)
    manifest = {
        "product": spec.name,
        "topic": spec.topic,
        "hour": hour,
        "generation": generation,
        "files": files,
        "rows": sum(f["rows"] for f in files),
        "bytes": sum(f["bytes"] for f in files),
        "offset_ranges": {str(p): r for p, r in ranges.items()},
        "compacted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": result.run_id,
    }
    crash_point("compact_before_marker")
    lake.write_bytes(marker, json.dumps(manifest, indent=1, sort_keys=True).encode())
    if not still_ours(metastore.hour(spec.name, hour)):
        lake.delete(marker)
        result.marker_reason = "the hour was reopened by late data while the marker was written; removed again"
        return
    metastore.record_marker(spec.name, hour, generation, manifest["rows"])
    result.marker_written = True
    result.marker_reason = "closed and compacted"


def read_marker(lake: Lake, product: str, hour: str) -> dict | None:
    """The hour's `_SUCCESS` manifest, or None when the hour is not marked."""
    path = f"{hour_dir(product, normalize_hour(hour))}/{SUCCESS}"
    try:
        return json.loads(lake.read_bytes(path))
    except (FileNotFoundError, OSError):
        return None


# --- which hours are due --------------------------------------------------------------------


@dataclass(frozen=True)
class DueHour:
    hour: str
    generation: int
    reason: str  # new | reopened | not yet compacted | unfinished | marker missing
    run_key_suffix: str = ""


@dataclass(frozen=True)
class SkippedHour:
    hour: str
    reason: str


def hours_due(spec: DataProductSpec, metastore: Metastore, now: datetime | None = None) -> tuple[list[DueHour], list[SkippedHour]]:
    """The closed hours that need a compaction run, from the metastore alone.

    Due: never compacted (state open, rows landed), reopened by late data, compacted but not
    marked (compacted while still open, or a crash before the marker), or left unfinished by a crash (replaced files not forgotten,
    or a dead hour claim). Skipped, with why: blocked by a quality gate, before the product's
    first partition, or claimed by a live run.
    """
    now = now or datetime.now(UTC)
    product = spec.name
    leftover_hours = {f.hour for f in metastore.files_in_states(product, ["replaced"])}
    marked = metastore.marked_hours(product)
    claims = {c["resource"].removeprefix("hour/"): c for c in metastore.claims_of(product) if c["resource"].startswith("hour/")}
    due: list[DueHour] = []
    skipped: list[SkippedHour] = []
    first = spec.partitioning.start
    for rec in metastore.hours(product):
        if not hour_is_closed(spec, rec.hour, now):
            continue
        if rec.state in ("open", "reopened") and rec.landed_rows > 0:
            reason = "reopened" if rec.state == "reopened" else ("new" if rec.generation == 0 else "not yet compacted")
        elif rec.state == "compacted" and rec.hour in leftover_hours:
            reason = "unfinished"
        elif rec.state == "compacted" and marked.get(rec.hour) != rec.generation:
            reason = "marker missing"
        else:
            continue
        if rec.blocked_reason:
            skipped.append(SkippedHour(rec.hour, f"blocked: {rec.blocked_reason}"))
            continue
        if parse_hour_key(rec.hour) < first:
            skipped.append(SkippedHour(rec.hour, f"before the product's first partition {first:%Y-%m-%d-%H}"))
            continue
        suffix = ""
        claim = claims.get(rec.hour)
        if claim is not None:
            if claim["lease_until"] > now.timestamp() and claim["lease_until"] > time.time():
                skipped.append(SkippedHour(rec.hour, f"being compacted by run {claim['run_id']}"))
                continue
            suffix = f":after-{claim['run_id'][:8]}"
        elif reason == "unfinished":
            suffix = ":tail"
        elif reason == "marker missing":
            suffix = ":marker"
        due.append(DueHour(rec.hour, rec.generation, reason, suffix))
    return due, skipped


def compact_closed_hours(
    spec: DataProductSpec,
    *,
    lake: Lake,
    metastore: Metastore,
    run_id: str | None = None,
    now: datetime | None = None,
    hours: Sequence[str] | None = None,
    on_result: Callable[[CompactionResult | SkippedHour], None] | None = None,
) -> tuple[list[CompactionResult], list[SkippedHour]]:
    """Compact the given hours, or every due closed hour; blocked or busy hours are skipped
    with their reason (never an exception for one hour stopping the others)."""
    from connectors.metastore import ClaimHeldError

    if hours is None:
        due, skipped = hours_due(spec, metastore, now)
        wanted = [d.hour for d in due]
    else:
        wanted, skipped = [normalize_hour(h) for h in hours], []
    results: list[CompactionResult] = []
    for s in skipped:
        if on_result:
            on_result(s)
    for h in wanted:
        try:
            r = compact_hour(spec, h, lake=lake, metastore=metastore, run_id=run_id, now=now)
        except (HourBlockedError, ClaimHeldError) as exc:
            s = SkippedHour(h, str(exc))
            skipped.append(s)
            if on_result:
                on_result(s)
            continue
        results.append(r)
        if on_result:
            on_result(r)
    return results, skipped
