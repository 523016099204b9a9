"""History beyond the broker's retention: one partition's landed rows, read back from the lake.

The lake keeps every landed record of a product with its Kafka provenance (`_partition`,
`_offset`), so it is where history older than the broker keeps is served from (DESIGN.md,
invariant 9). `lake_span` says how far back the lake reaches for one partition; `read_history`
reads the rows of an offset window in offset order, with the columns and types of the landing
decoder's `valid` table (`lake_schema(spec)`) — the rows a decode of the same offsets from Kafka
gives, so events built from either have the same ids, sequences, bodies and signatures.

Which files: the metastore's live files, never a listing. Of those, only the files whose offsets
of the partition overlap the window (`min_offset`/`max_offset` of a landed file, the partition's
runs in `ranges` of a compacted one) and, inside a file, only the row groups whose `_offset`
statistics overlap it. Rows of another topic (a product moved to a new topic keeps its old rows)
are never returned: their offsets mean something else.

Memory stays bounded whatever the window: it is read in slices of `max_rows` offsets (offsets are
unique in a partition, so a slice holds at most `max_rows` rows), and a row group that reaches past
the slice is kept, filtered to the partition, for the next slices — at most `4 × max_rows` rows
of them, beyond which a row group is read again when needed. A compacted hour is sorted by event
time, so its row groups hold narrow ranges of offsets and each is read about once; an hour sorted
otherwise costs more reads, never more memory.

`events_from_history` turns those rows into the CloudEvents push and pull send, through the same
`events_from_batch` as a read from Kafka, so `id`, `sequence`, `time`, `subject`/`partitionkey`
and the mapped extension attributes are those of the Kafka path, for every format. `data` is the
landed row rendered by `events.record_json` (the spec's fields in its order, absent ones left
out, timestamps RFC 3339 UTC with microseconds, decimals as plain text) — exactly what a Kafka
read of an avro, protobuf or cloudevents product sends. A json product's Kafka events carry the
bytes the producer wrote, which the lake does not keep: from the lake its `data` is equal to them
as a record of the spec's fields (the same values; other fields the producer sent, its spacing
and its spelling of times and decimals are not in the lake), not byte for byte.

A compaction may replace (and delete) files while they are read. The slice being read is then
read again from the metastore's new live files, which hold the same rows; nothing of a slice is
handed out before the slice is whole, so nothing is doubled or skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import and_, func, or_, select

from connectors.errors import TransientError
from connectors.flows.compaction import conform
from connectors.formats import lake_schema
from connectors.gateway.events import FlowEvent, events_from_batch, record_json
from connectors.lake import Lake
from connectors.metastore import Metastore, files, landings, offsets, reading
from connectors.spec import DataProductSpec

KINDS = ("landed", "compacted")
CACHED_SLICES = 4  # row groups kept across slices: at most this many × max_rows rows
RELISTS = 5  # a slice whose files vanish (compaction) is read again from new live files, this often


class HistoryError(TransientError):
    """The lake's files of a window kept changing while they were read."""


@dataclass(frozen=True)
class LakeSpan:
    first: int  # lowest offset of the partition in the lake's live files
    end: int  # the landing's committed next offset (everything in [first, end) landed or quarantined)


# --- how far back the lake reaches -----------------------------------------------------------


def lake_span(metastore: Metastore, product: str, partition: int) -> LakeSpan | None:
    """[first, end) of `partition` that the lake accounts for without a hole: `end` is the
    landing's committed offset, `first` the lowest offset of a live file (landed, compacted or
    quarantined) inside the unbroken run of landing commits that ends at `end`. None when the
    lake holds nothing of the partition, or when the committed offset was moved past what was
    landed (an operator's reset): then nothing below it is known to be whole."""
    with reading(metastore.engine) as conn:
        end = conn.execute(
            select(offsets.c.next_offset).where(and_(offsets.c.product == product, offsets.c.partition == partition))
        ).scalar()
        if end is None:
            return None
        ranges = conn.execute(
            select(landings.c.start_offset, landings.c.end_offset)
            .where(and_(landings.c.product == product, landings.c.partition == partition))
        ).all()
        since = _unbroken_since([(int(s), int(e)) for s, e in ranges], int(end))
        if since is not None and since >= end:
            return None
        first = _first_offset(conn, product, partition, since or 0)
    return LakeSpan(first, int(end)) if first is not None and first < end else None


def _unbroken_since(ranges: list[tuple[int, int]], end: int) -> int | None:
    """Start of the run of landing ranges [start, end) that reaches `end` without a hole; None
    when no landing of the partition is recorded (then the files are all there is to go by)."""
    if not ranges:
        return None
    since = end
    for start, stop in sorted(ranges, key=lambda r: r[1], reverse=True):
        if stop >= since and start < since:
            since = start
    return since


def _first_offset(conn, product: str, partition: int, since: int) -> int | None:
    """Lowest offset ≥ since of the partition in a live file: landed and quarantine files carry
    one partition and its min_offset; compacted ones the partition's runs in `ranges`."""
    own = conn.execute(
        select(func.min(func.coalesce(files.c.min_offset, files.c.start_offset))).where(and_(
            files.c.product == product, files.c.state == "committed", files.c.partition == partition,
            files.c.kind.in_(["landed", "quarantine"]),
            func.coalesce(files.c.min_offset, files.c.start_offset) >= since,
        ))
    ).scalar()
    best = int(own) if own is not None else None
    compacted = conn.execute(
        select(files.c.path, files.c.min_offset, files.c.ranges).where(and_(
            files.c.product == product, files.c.state == "committed", files.c.kind == "compacted",
            or_(files.c.max_offset.is_(None), files.c.max_offset >= since),
        )).order_by(files.c.min_offset)
    )
    for _, low, ranges in compacted:
        if best is not None and low is not None and low >= best:
            break  # ordered by the file's lowest offset (of any partition): none lower follows
        runs = json.loads(ranges).get(str(partition), []) if ranges else []
        for a, b in runs:
            if b >= since:
                best = max(a, since) if best is None else min(best, max(a, since))
                break
    return best


# --- rows as events -----------------------------------------------------------------------------

HISTORY_FORMATS = ("json", "cloudevents", "avro", "protobuf")  # every format: the lake keeps its decoded rows


class _LakeRecord:
    """A lake row in the shape `events_from_batch` reads a Kafka message in."""

    __slots__ = ("_key", "_timestamp", "_value")

    def __init__(self, key: bytes | None, timestamp_ms: int | None, value: bytes | None):
        self._key, self._timestamp, self._value = key, timestamp_ms, value

    def key(self) -> bytes | None:
        return self._key

    def timestamp(self) -> tuple[int, int | None]:
        return (1, self._timestamp)  # TIMESTAMP_CREATE_TIME, as the producer set it

    def value(self) -> bytes | None:
        return self._value


def events_from_history(spec: DataProductSpec, partition: int, table: pa.Table,
                        dataschema: str | None = None) -> list[FlowEvent]:
    """The rows of a `read_history` table as the events a read of the same offsets from Kafka
    gives (same ids, sequences, attributes — `dataschema` as events_from_batch takes it). `data`
    is the row rendered by `record_json`, the renderer Kafka reads of avro, protobuf and
    cloudevents products use, so for those the events are the same byte for byte; a json
    product's Kafka events carry the producer's bytes, which the lake does not keep (module
    docstring). A delete marker (`_deleted`) is a tombstone, which is no event, as from Kafka."""
    if table.num_rows == 0:
        return []
    offsets = table.column("_offset").to_pylist()
    keys = table.column("_key").to_pylist() if "_key" in table.column_names else [None] * table.num_rows
    stamps = pc.cast(table.column("_timestamp"), pa.int64()).to_pylist()
    values: list[bytes | None] = record_json(spec, table)
    if "_deleted" in table.column_names:
        for i, deleted in enumerate(table.column("_deleted").to_pylist()):
            if deleted:
                values[i] = None
    messages = {o: _LakeRecord(k.encode() if k is not None else None, t, v)
                for o, k, t, v in zip(offsets, keys, stamps, values, strict=True)}
    # json: events_from_batch takes each message's value as data — here the rendered row
    return events_from_batch(spec, partition, messages, table, dataschema)


# --- reading a window --------------------------------------------------------------------------


def read_history(lake: Lake, metastore: Metastore, spec: DataProductSpec, partition: int, start: int, end: int,
                 *, max_rows: int = 50_000) -> Iterator[pa.Table]:
    """Rows of `partition` with start <= _offset < end from the live files, sorted by
    _offset, in tables of at most max_rows, with the same columns and types as the landing
    decoder's `valid` table (so frames built from them equal frames built from Kafka)."""
    if end <= start:
        return
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    reader = _PartitionReader(lake, metastore, spec, partition, start, end, max_rows * CACHED_SLICES)
    held: list[pa.Table] = []
    rows = 0
    at = start
    while True:
        at = reader.next_offset(at)
        if at >= end:
            break
        stop = min(at + max_rows, end)
        piece = reader.read(at, stop)
        if piece.num_rows:
            held.append(piece)
            rows += piece.num_rows
        while rows >= max_rows:
            table = pa.concat_tables(held)
            yield table.slice(0, max_rows).combine_chunks()
            rest = table.slice(max_rows)
            held, rows = ([rest] if rest.num_rows else []), rest.num_rows
        at = stop
    if rows:
        yield pa.concat_tables(held).combine_chunks()


@dataclass
class _RowGroup:
    index: int
    rows: int
    low: int | None  # _offset statistics (of every partition in the group); None: unknown
    high: int | None
    partitions: tuple[int, int] | None  # _partition statistics


@dataclass
class _File:
    path: str
    runs: list[tuple[int, int]]  # the partition's offsets in the file, as inclusive runs
    groups: list[_RowGroup] | None = None
    metadata: pq.FileMetaData | None = None
    kept: dict[int, pa.Table] = field(default_factory=dict)  # row group → its rows at/after the last slice

    def overlaps(self, start: int, stop: int) -> bool:
        return any(a < stop and b >= start for a, b in self.runs)


class _PartitionReader:
    """The live files of one partition and the row groups kept between slices."""

    def __init__(self, lake: Lake, metastore: Metastore, spec: DataProductSpec, partition: int, start: int, end: int,
                 keep_rows: int):
        self.lake, self.metastore, self.spec, self.partition, self.end = lake, metastore, spec, partition, end
        self.schema = lake_schema(spec)
        self.keep_rows = keep_rows
        self.files: dict[str, _File] = {}
        self.list_files(start)

    def list_files(self, start: int) -> None:
        """(Re)read which live files hold offsets of the partition in [start, end)."""
        p = self.partition
        cond = and_(
            files.c.product == self.spec.name, files.c.state == "committed", files.c.kind.in_(KINDS),
            or_(files.c.partition == p, files.c.partition.is_(None)),
            or_(files.c.max_offset.is_(None), files.c.max_offset >= start),
            or_(files.c.min_offset.is_(None), files.c.min_offset < self.end),
        )
        with reading(self.metastore.engine) as conn:
            rows = conn.execute(select(files).where(cond)).mappings().all()
        found: dict[str, _File] = {}
        for row in rows:
            runs = _runs(row, p)
            if runs:
                found[row["path"]] = self.files.get(row["path"]) or _File(row["path"], runs)
        self.files = found

    def next_offset(self, at: int) -> int:
        """The first offset ≥ at that a live file may hold (the window's end when none)."""
        best = self.end
        for f in self.files.values():
            for a, b in f.runs:
                if b >= at:
                    best = min(best, max(a, at))
                    break
        return best

    def read(self, start: int, stop: int) -> pa.Table:
        """Rows with start <= _offset < stop, sorted by offset; read again from the new live
        files when a file vanished under the read (a compaction swapped it out)."""
        for _ in range(RELISTS):
            try:
                pieces = [piece for f in list(self.files.values()) if f.overlaps(start, stop)
                          for piece in self._rows(f, start, stop)]
            except FileNotFoundError:  # on disk and on S3 alike (pyarrow's filesystems)
                for f in self.files.values():
                    f.kept.clear()  # a half-read slice may have moved them past `start`
                self.list_files(start)
                continue
            if not pieces:
                return self.schema.empty_table()
            table = pa.concat_tables(pieces)
            if len(pieces) > 1:
                table = table.take(pc.sort_indices(table.column("_offset")))
            return table
        raise HistoryError(
            f"{self.spec.name}[{self.partition}]: the lake's files of offsets {start}..{stop - 1} changed "
            f"{RELISTS} times while they were read; try again"
        )

    def _rows(self, f: _File, start: int, stop: int) -> Iterator[pa.Table]:
        """The file's rows of the partition in [start, stop), row group by row group; the part
        of a row group past `stop` is kept for the next slices (within the bound)."""
        groups = self._groups(f)
        for g in groups:
            if g.low is not None and (g.high < start or g.low >= stop):
                continue
            if g.partitions is not None and not g.partitions[0] <= self.partition <= g.partitions[1]:
                continue
            rows = f.kept.pop(g.index, None)
            if rows is None:
                rows = self._read_group(f, g.index, start)
            offs = rows.column("_offset").to_numpy()
            cut = int(np.searchsorted(offs, stop, side="left"))
            begin = int(np.searchsorted(offs, start, side="left"))
            if cut < len(offs) and self._kept_rows() + (len(offs) - cut) <= self.keep_rows:
                f.kept[g.index] = rows.slice(cut)
            if cut > begin:
                yield rows.slice(begin, cut - begin)

    def _kept_rows(self) -> int:
        return sum(t.num_rows for f in self.files.values() for t in f.kept.values())

    def _groups(self, f: _File) -> list[_RowGroup]:
        if f.groups is None:
            with self.lake.fs.open_input_file(self.lake.full(f.path)) as handle:
                f.metadata = pq.ParquetFile(handle).metadata
            f.groups = _row_groups(f.metadata)
        return f.groups

    def _read_group(self, f: _File, index: int, start: int) -> pa.Table:
        """One row group's rows of this partition and topic with start <= _offset < end, sorted."""
        with self.lake.fs.open_input_file(self.lake.full(f.path)) as handle:
            pf = pq.ParquetFile(handle, metadata=f.metadata)
            names = [n for n in self.schema.names if n in pf.schema_arrow.names]
            table = pf.read_row_group(index, columns=names)
        offs = table.column("_offset")
        keep = pc.and_(
            pc.and_(pc.equal(table.column("_partition"), self.partition), pc.equal(table.column("_topic"), self.spec.topic)),
            pc.and_(pc.greater_equal(offs, start), pc.less(offs, self.end)),
        )
        table = table.filter(keep)
        table = table.take(pc.sort_indices(table.column("_offset")))
        return conform(table, self.schema)


def _runs(row: Mapping[str, Any], partition: int) -> list[tuple[int, int]]:
    """The partition's offsets in a file (an fs_files row) as sorted inclusive runs."""
    if row["ranges"]:
        return sorted((int(a), int(b)) for a, b in json.loads(row["ranges"]).get(str(partition), []))
    if row["partition"] is not None and row["partition"] != partition:
        return []
    low = row["min_offset"] if row["min_offset"] is not None else row["start_offset"]
    high = row["max_offset"]
    if high is None and row["end_offset"] is not None:
        high = row["end_offset"] - 1
    if low is None or high is None:
        return [(0, 2**62)]  # nothing recorded: the file may hold any offset, so it is read
    return [(int(low), int(high))]


def _row_groups(metadata: pq.FileMetaData) -> list[_RowGroup]:
    """Row groups with their _offset and _partition statistics, in order of their lowest offset."""
    columns = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    groups = []
    for i in range(metadata.num_row_groups):
        rg = metadata.row_group(i)
        low = high = parts = None
        if "_offset" in columns:
            stats = rg.column(columns["_offset"]).statistics
            if stats is not None and stats.has_min_max:
                low, high = int(stats.min), int(stats.max)
        if "_partition" in columns:
            stats = rg.column(columns["_partition"]).statistics
            if stats is not None and stats.has_min_max:
                parts = (int(stats.min), int(stats.max))
        groups.append(_RowGroup(i, rg.num_rows, low, high, parts))
    return sorted(groups, key=lambda g: (g.low is not None, g.low or 0))
