"""Backfill by replay: rebuild an hour from the stream, the source of truth.

The metastore says which offsets an hour holds: per Kafka partition, the offset runs of its
live files (`ranges` of compacted files, `[min_offset, max_offset]` of landed ones). A replay
reads exactly those spans again with `RangeReader` (assign(), a start and a cap per span),
decodes them with the product's `Decoder`, keeps the valid rows whose event time falls in the
hour and whose offsets lie in the recorded spans, checks that the (partition, offset) set is
exactly the recorded one, and swaps the result in as a new generation with the same machinery
as compaction (claim, pending outputs, verification, one-transaction swap, marker).

When the topic no longer holds the span (history lost: retention, a recreated topic, a memory
broker restarted) or the stream disagrees with the recorded offsets, the hour is rebuilt from
its live files instead, and the result says so (`source="live_files"`, `note`). Either way a
rebuilt hour holds exactly the same rows; `note` also says whether the replayed values equal
the live ones (they differ only if the spec's decoding changed since the data landed).

Memory: decoded rows are spilled to a local temporary Parquet file as they arrive, then the
compaction core sorts and writes them with its own memory bound.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from connectors.errors import TerminalError
from connectors.flows.compaction import (
    CompactionResult,
    Fingerprint,
    RewriteJob,
    Rewritten,
    compact_hour,
    conform,
    merge_ranges,
    sources_of,
)
from connectors.flows.context import RunContext
from connectors.formats import decoder_for, lake_schema
from connectors.kafka import HistoryLostError, KafkaReadError, RangeReader, consumer_config
from connectors.lake import Lake, epoch_hour, normalize_hour, parse_hour_key
from connectors.leases import LeaseKeeper
from connectors.metastore import FileRecord
from connectors.spec import DataProductSpec

log = logging.getLogger(__name__)


class ReplayMismatch(TerminalError, RuntimeError):
    """The stream does not hold the recorded offsets of the hour (any more)."""


def recorded_spans(files: list[FileRecord]) -> dict[int, list[list[int]]]:
    """Per partition, the merged offset spans [first, last] the live files record."""
    per_file: list[dict[int, list[list[int]]]] = []
    for f in files:
        if f.ranges:
            per_file.append(f.ranges)
        elif f.partition is not None and f.min_offset is not None and f.max_offset is not None:
            per_file.append({int(f.partition): [[int(f.min_offset), int(f.max_offset)]]})
        else:
            raise ReplayMismatch(f"{f.path} records no offsets (no ranges, no min/max); cannot replay it")
    return merge_ranges(per_file)


# Spans closer than this many offsets are read in one pass: each round costs a consumer and
# its fetch start-up (~1 s), far more than decoding the records in between. An hour whose
# event times interleave with other hours' records has thousands of tiny spans; read one by
# one, replaying one demo hour took ~65 s. The records read in between are filtered by hour
# and span, and the result must still equal the recorded offsets exactly.
SPAN_GAP = 100_000


def coalesce_spans(spans: dict[int, list[list[int]]], gap: int = SPAN_GAP) -> dict[int, list[list[int]]]:
    merged: dict[int, list[list[int]]] = {}
    for p, runs in spans.items():
        acc: list[list[int]] = []
        for a, b in sorted(runs):
            if acc and a - acc[-1][1] <= gap:
                acc[-1][1] = max(acc[-1][1], b)
            else:
                acc.append([a, b])
        merged[p] = acc
    return merged


def _sorted_pairs(parts: list[np.ndarray], offs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(partition, offset) arrays concatenated and sorted, for an exact comparison of sets."""
    p = np.concatenate(parts) if parts else np.empty(0, np.int64)
    o = np.concatenate(offs) if offs else np.empty(0, np.int64)
    order = np.lexsort((o, p))
    return p[order], o[order]


def _recorded_pairs(lake: Lake, files: list[FileRecord]) -> tuple[np.ndarray, np.ndarray]:
    parts, offs = [], []
    for f in files:
        t = lake.read_table(f.path, columns=["_partition", "_offset"])
        parts.append(t.column("_partition").to_numpy().astype(np.int64))
        offs.append(t.column("_offset").to_numpy().astype(np.int64))
    return _sorted_pairs(parts, offs)


def _read_spans(
    spec: DataProductSpec,
    hour: str,
    spans: dict[int, list[list[int]]],
    conf: dict[str, Any],
    writer: pq.ParquetWriter,
    keeper: LeaseKeeper | None,
    idle_timeout_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Read every span, write the hour's valid rows in them; returns their (partition, offset)."""
    # No de-duplication state: a replay re-reads records that already landed once.
    decoder = decoder_for(spec, spec.topic)
    schema = lake_schema(spec)
    target_hour = epoch_hour(parse_hour_key(hour))
    parts, offs = [], []
    spans = coalesce_spans(spans)
    rounds = max((len(r) for r in spans.values()), default=0)
    for i in range(rounds):  # round i reads the i-th span of every partition with one consumer
        this = {p: runs[i] for p, runs in spans.items() if i < len(runs)}
        reader = RangeReader(
            conf, spec.topic, {p: lo for p, (lo, _) in this.items()},
            {p: hi - lo + 1 for p, (lo, hi) in this.items()}, idle_timeout_s=idle_timeout_s,
            with_headers=decoder.needs_headers,
        )
        for batch in reader.batches():
            if keeper is not None:
                keeper.check()
            lo, hi = this[batch.partition]
            decoded = decoder.decode(batch)
            if not decoded.valid.num_rows:
                continue
            off = decoded.valid.column("_offset")
            keep = pc.and_(
                pc.equal(decoded.hours, target_hour),
                pc.and_(pc.greater_equal(off, lo), pc.less_equal(off, hi)),
            )
            rows = decoded.valid.filter(keep)
            if rows.num_rows:
                writer.write_table(rows.cast(schema))
                parts.append(rows.column("_partition").to_numpy().astype(np.int64))
                offs.append(rows.column("_offset").to_numpy().astype(np.int64))
        for p, read in reader.reads.items():
            if read.end <= this[p][1]:
                raise ReplayMismatch(
                    f"{spec.topic}[{p}] ends at offset {read.end} but the hour records offsets up to {this[p][1]}"
                )
    return _sorted_pairs(parts, offs)


def replay_hour(
    spec: DataProductSpec,
    hour: str,
    run: RunContext,
    *,
    idle_timeout_s: float = 15.0,
    spill_dir: str | None = None,
) -> CompactionResult:
    """Rebuild one hour from the stream (or its live files when the stream lost it) as a new
    generation, in `run` (its broker and client settings, stores, claim and clock, as
    `compact_hour` takes them). Raises HourBlockedError / ClaimHeldError like `compact_hour`."""
    hour = normalize_hour(hour)
    lake = run.require_lake(f"replaying {spec.name} {hour}")
    conf = consumer_config(run.bootstrap, spec.consumer_group, dict(run.kafka_config))

    def rebuild(job: RewriteJob, live: list[FileRecord]) -> Rewritten:
        try:
            spans = recorded_spans(live)
            recorded = _recorded_pairs(lake, live)
            with tempfile.TemporaryDirectory(prefix="flowsuite-replay-", dir=spill_dir) as tmp:
                path = os.path.join(tmp, "replayed.parquet")
                with pq.ParquetWriter(path, lake_schema(spec), compression="none") as writer:
                    replayed = _read_spans(spec, hour, spans, conf, writer, job.keeper, idle_timeout_s)
                if not (np.array_equal(recorded[0], replayed[0]) and np.array_equal(recorded[1], replayed[1])):
                    raise ReplayMismatch(
                        f"the stream holds {len(replayed[0])} record(s) of the hour in the recorded spans, "
                        f"the live files {len(recorded[0])}; the (partition, offset) sets differ"
                    )
                done = job.rewrite([(pafs.LocalFileSystem(), path, os.path.getsize(path))], source="kafka")
            fingerprint = done.fingerprint
            live_fp = Fingerprint(lake_schema(spec).names)
            try:
                for f in live:
                    live_fp.add(_conform_live(lake.read_table(f.path), spec))
                same = live_fp.checksum == fingerprint.checksum
            finally:
                live_fp.close()
            spans_text = ", ".join(f"p{p}: {len(r)} span(s)" for p, r in spans.items())
            note = (
                f"replayed {fingerprint.rows} record(s) from {spec.topic} ({spans_text}); "
                + ("values equal to the live files" if same else "values differ from the live files (the decoding changed since landing)")
            )
            done.note = note
            return done
        except (HistoryLostError, KafkaReadError, ReplayMismatch) as exc:
            log.warning("%s %s: replay impossible (%s); rebuilding from the live files", spec.name, hour, exc)
            return job.rewrite(sources_of(lake, live),
                               note=f"rebuilt from the live files: the stream no longer holds the hour ({exc})")

    return compact_hour(spec, hour, run, force=True, spill_dir=spill_dir, rebuild=rebuild)


def _conform_live(table: pa.Table, spec: DataProductSpec) -> pa.Table:
    return conform(table, lake_schema(spec))
