# Over 400 lines: compact_hour's claim → rewrite → verify → swap → mark sequence, and which hours are due.
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
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from connectors.errors import TerminalError
from connectors.faults import crash_point
from connectors.flows.compaction.ranges import merge_ranges
from connectors.flows.compaction.rewrite import (
    MIN_ROW_GROUP_ROWS,
    Output,
    RewriteJob,
    Rewritten,
    sources_of,
)
from connectors.flows.context import RunContext
from connectors.lake import SUCCESS, Lake, hour_dir, normalize_hour, parse_hour_key
from connectors.leases import LeaseKeeper
from connectors.metastore import (
    FileRecord,
    HourRecord,
    Metastore,
    hour_resource,
)
from connectors.spec import DataProductSpec

log = logging.getLogger(__name__)



class HourBlockedError(TerminalError, RuntimeError):
    """A blocking quality check failed on data of this hour: compaction leaves it alone."""

    def __init__(self, product: str, hour: str, reason: str):
        self.product, self.hour, self.reason = product, hour, reason
        super().__init__(
            f"{product}: hour {hour} is blocked by a failing quality gate and is not compacted: {reason} "
            "(clear it with Metastore.unblock_hours once the data is fixed)"
        )


# --- small helpers other modules share ------------------------------------------------------


def hour_closes_at(spec: DataProductSpec, hour: str) -> datetime:
    """When the hour is closed: its end plus the product's allowed lateness."""
    return parse_hour_key(hour) + timedelta(hours=1) + spec.partitioning.allowed_lateness


def hour_is_closed(spec: DataProductSpec, hour: str, now: datetime | None = None) -> bool:
    return (now or datetime.now(UTC)) >= hour_closes_at(spec, hour)


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


# --- compaction of one hour -----------------------------------------------------------------


def compact_hour(
    spec: DataProductSpec,
    hour: str,
    run: RunContext,
    *,
    force: bool = False,
    target_file_bytes: int | None = None,
    spill_dir: str | None = None,
    rebuild: Callable[[RewriteJob, list[FileRecord]], Rewritten] | None = None,
) -> CompactionResult:
    """Compact one hour (see the module docstring) in `run` (connectors/flows/context.py: the
    lake, the metastore, the run id recorded with the claim and the files, `is_dead` to take over
    a failed run's claim before its lease ends, the lease, and the clock that decides whether the
    hour is closed). Idempotent: an hour already compacted with no new files is a no-op that says
    so (and finishes an interrupted tail, marker included).

    Args:
        hour: '2026-11-26-10' or a Dagster key '2026-11-26-10:00'.
        force: write a new generation even when nothing changed (a rebuild).
        target_file_bytes: size of output files (default the spec's target_file_size_mb).
        rebuild: `rebuild(job, live_files)` replaces "rewrite the live files" as the source of
            rows (replay uses it); it returns `job.rewrite(...)`'s `Rewritten`.
    Raises:
        HourBlockedError: a quality gate blocked the hour. ClaimHeldError: another live run
        compacts it. VerificationError: the rewrite did not hold exactly the input rows.
    """
    return _HourCompaction(spec, normalize_hour(hour), run).run(force, target_file_bytes, spill_dir, rebuild)


class _HourCompaction:
    """One compaction of one hour, step by step (the module docstring's 1–5), sharing its state."""

    def __init__(self, spec: DataProductSpec, hour: str, run: RunContext):
        self.started = time.monotonic()
        self.spec, self.hour, self.run_ctx = spec, hour, run
        self.product, self.metastore = spec.name, run.metastore
        self.lake = run.require_lake(f"compacting {spec.name} {hour}")
        self.resource = hour_resource(hour)
        self.owner = uuid.uuid4().hex

    def _not_blocked(self) -> HourRecord | None:
        record = self.metastore.hour(self.product, self.hour)
        if record is not None and record.blocked_reason:
            raise HourBlockedError(self.product, self.hour, record.blocked_reason)
        return record

    def run(self, force: bool, target_file_bytes: int | None, spill_dir: str | None,
            rebuild: Callable[[RewriteJob, list[FileRecord]], Rewritten] | None) -> CompactionResult:
        run, product, metastore = self.run_ctx, self.product, self.metastore
        self._not_blocked()
        takeover = metastore.claim(product, self.resource, self.owner, run.run_id, run.lease_s,
                                   is_dead=run.is_dead, on_delete=self.lake.delete)
        if takeover.previous_run_id:
            log.warning(
                "%s %s: took over the compaction claim from run %s; deleted %d pending file(s)",
                product, self.hour, takeover.previous_run_id, len(takeover.pending_files),
            )
        self.swapped = False
        try:
            with LeaseKeeper(metastore, product, self.owner, run.lease_s, [self.resource], what="nothing swapped") as keeper:
                record = self._not_blocked()
                # An interrupted tail of an earlier compaction: its replaced files go first.
                leftover_files = [f for f in metastore.files_in_states(product, ["replaced"]) if f.hour == self.hour]
                self.leftovers = [f.path for f in leftover_files]
                for path in _deletable_now(self.spec, metastore, leftover_files):
                    self.lake.delete(path)
                live = metastore.live_files(product, self.hour)
                landed = [f for f in live if f.kind == "landed"]
                result = CompactionResult(
                    product=product, hour=self.hour, status="noop", reason="",
                    generation=record.generation if record else 0,
                    files_before=[f.path for f in live], bytes_before=sum(f.bytes for f in live),
                    took_over_from=takeover.previous_run_id, deleted_pending=list(takeover.pending_files),
                    cleaned_replaced=self.leftovers, source="live_files", run_id=run.run_id,
                )
                if not live:
                    return self._nothing_live(result)
                if not landed and not force and record is not None and record.state == "compacted":
                    return self._already_compacted(result, record, live)
                generation = max([record.generation if record else 0, *(f.generation for f in live)]) + 1
                outputs, fingerprint = self._rewrite_and_swap(result, live, generation, keeper, target_file_bytes,
                                                              spill_dir, rebuild)
            crash_point("compact_after_swap")
            return self._after_swap(result, live, landed, generation, outputs, fingerprint)
        except BaseException:
            if not self.swapped:
                _abandon(product, self.resource, self.owner, self.lake, metastore)
            raise

    def _done(self, result: CompactionResult) -> CompactionResult:
        result.duration_s = time.monotonic() - self.started
        return result

    def _nothing_live(self, result: CompactionResult) -> CompactionResult:
        result.reason = "no live files in this hour (nothing landed, or only quarantined records)"
        result.marker_reason = "nothing to mark"
        self.metastore.release(self.product, self.resource, self.owner)
        self.metastore.drop_replaced(self.leftovers)
        return self._done(result)

    def _already_compacted(self, result: CompactionResult, record: HourRecord, live: list[FileRecord]) -> CompactionResult:
        result.reason = f"already compacted at generation {record.generation}; no new files"
        result.files_after = [f.path for f in live]
        result.rows = sum(f.rows for f in live)
        result.bytes_after = result.bytes_before
        result.file_rows = {f.path: f.rows for f in live}
        result.file_bytes = {f.path: f.bytes for f in live}
        result.offset_ranges = merge_ranges(f.ranges for f in live)
        self.metastore.release(self.product, self.resource, self.owner)
        self.swapped = True  # nothing of ours is pending
        _finish_tail(self.spec, self.hour, self.lake, self.metastore, result, live_records=live,
                     now=self.run_ctx.now(), generation=record.generation)
        self.metastore.drop_replaced(self.leftovers)
        return self._done(result)

    def _rewrite_and_swap(self, result: CompactionResult, live: list[FileRecord], generation: int,
                          keeper: LeaseKeeper, target_file_bytes: int | None, spill_dir: str | None,
                          rebuild: Callable[[RewriteJob, list[FileRecord]], Rewritten] | None):
        lake_sink = self.spec.sinks.lake
        target = target_file_bytes or lake_sink.target_file_size_mb * 1024 * 1024
        row_group_rows = max(MIN_ROW_GROUP_ROWS, lake_sink.row_group_rows)
        job = RewriteJob(self.spec, self.hour, self.lake, self.metastore, self.run_ctx.run_id, generation, target,
                         row_group_rows, keeper, spill_dir)
        done = rebuild(job, live) if rebuild is not None else job.rewrite(sources_of(self.lake, live))
        result.source, result.note = done.source, done.note
        keeper.check()
        crash_point("compact_before_swap")
        self.metastore.swap_hour(
            product=self.product, hour=self.hour, owner=self.owner, replaced=[f.path for f in live],
            new_files=[o.stats() for o in done.outputs], generation=generation,
        )
        self.swapped = True
        return done.outputs, done.fingerprint

    def _after_swap(self, result: CompactionResult, live: list[FileRecord], landed: list[FileRecord],
                    generation: int, outputs: list[Output], fingerprint) -> CompactionResult:
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
        doomed = _deletable_now(self.spec, self.metastore, live)
        if doomed:
            self.lake.delete(doomed[0])
            crash_point("compact_during_delete")
            self.lake.delete_many(doomed[1:])  # one folder listing, not one per file
        _finish_tail(self.spec, self.hour, self.lake, self.metastore, result, outputs=outputs,
                     now=self.run_ctx.now(), generation=generation)
        self.metastore.drop_replaced([f.path for f in live] + self.leftovers)
        crash_point("compact_after_drop")
        return self._done(result)


def _deletable_now(spec: DataProductSpec, metastore: Metastore, replaced: Sequence[FileRecord]) -> list[str]:
    """The replaced files to delete now. For a product published as an Iceberg table, compacted
    files a retained snapshot may still reference wait for snapshot expiry instead
    (`connectors.tables.publish.defer_replaced`)."""
    # Only compacted files are ever in a snapshot: replacing landed ones (an hour's first
    # compaction) needs no deferral, nor the ~0.4 s import of pyiceberg in a fresh run process.
    if not spec.sinks.lake.iceberg.enabled or not any(f.kind == "compacted" for f in replaced):
        return [f.path for f in replaced]
    from connectors.tables.publish import defer_replaced  # pyiceberg only where it is used

    return defer_replaced(metastore, spec.name, replaced)


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
    except Exception:  # the lease expires and the next claimant cleans up
        log.warning("%s: cleaning up after a failed compaction of %s failed", product, resource, exc_info=True)


def _finish_tail(
    spec: DataProductSpec,
    hour: str,
    lake: Lake,
    metastore: Metastore,
    result: CompactionResult,
    *,
    outputs: Sequence[Output] | None = None,
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
            if claim["lease_until"] > now.timestamp() and claim["lease_until"] > metastore.clock():
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
    run: RunContext,
    *,
    hours: Sequence[str] | None = None,
    on_result: Callable[[CompactionResult | SkippedHour], None] | None = None,
) -> tuple[list[CompactionResult], list[SkippedHour]]:
    """Compact the given hours, or every hour due at `run`'s clock, in `run`; blocked or busy
    hours are skipped with their reason (never an exception for one hour stopping the others)."""
    from connectors.metastore import ClaimHeldError

    if hours is None:
        due, skipped = hours_due(spec, run.metastore, run.now())
        wanted = [d.hour for d in due]
    else:
        wanted, skipped = [normalize_hour(h) for h in hours], []
    results: list[CompactionResult] = []
    for s in skipped:
        if on_result:
            on_result(s)
    for h in wanted:
        try:
            r = compact_hour(spec, h, run)
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
