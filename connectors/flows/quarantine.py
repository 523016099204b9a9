"""Quarantine you can act on: what was rejected and why, and replaying it under the current spec.

Quarantined records live in Parquet files under `<lake>/_quarantine/<product>/dt=…/hour=…/`
(hour of their Kafka timestamp: they may have no event time), with their provenance, the
reason (`_error`) and the original bytes (`_raw`). The metastore lists the live ones
(`kind = 'quarantine'`, `state = 'committed'`); a directory listing is never the truth.

`replay_quarantine` re-decodes and re-validates the original bytes under the product's
*current* spec (an owner widened a range, added an enum value, fixed a pattern) and lands the
records that now pass, exactly once:

- per live quarantine file F it claims `replay/<id of F>`, then writes the passing records to
  `<event hour dir>/<topic>+<p>+<start>.replay-<id>.parquet` and the rest, with their current
  reasons, to `<F's dir>/<topic>+<p>+<start>.q-<id>.parquet` — deterministic names, registered
  pending before a byte is written;
- one metastore transaction (`Metastore.commit_replay`) makes both live and F not live, as a
  compare-and-set on F still being live: a second replay finds F gone and the rewritten file's
  records failing again, so it lands nothing new; a crash before the commit leaves F live and
  only pending files, which the next replay's claim takeover deletes;
- compacted hours it lands into are reopened (their `_SUCCESS` goes), as a landing does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from connectors.flows.context import RunContext
from connectors.formats import Batch, decoder_for
from connectors.kafka import original_key
from connectors.lake import SUCCESS, Lake, hour_dir, hour_key
from connectors.metastore import (
    ClaimHeldError,
    CommitConflictError,
    FileRecord,
    FileStats,
    Metastore,
)
from connectors.spec import DataProductSpec

log = logging.getLogger(__name__)

REPLAY_LEASE_S = 120.0

# Values inside reasons vary per record; the kind of problem is what an owner counts.
_REASON_VALUES = [
    (re.compile(r" = '.*?'(?= is not one of| does not match)"), ""),
    (re.compile(r" = -?[\d.eE+]+(?= is (below|above))"), ""),
    (re.compile(r" is \d+ long, above"), " is longer than"),
    (re.compile(r" at line \d+ column \d+"), ""),
    (re.compile(r" \(byte \d+\)"), ""),
    (re.compile(r": -?\d+ does not fit"), ": a value does not fit"),
    (re.compile(r"(field '[^']+'): '.*?' is not an ISO-8601"), r"\1: a value is not an ISO-8601"),
    (re.compile(r"(tombstone key) '.*?'"), r"\1"),
]


def reason_kind(reason: str | None) -> str:
    """The reason without the record's own values: `field 'cost_micros' is below min 0`."""
    text = reason or "(no reason)"
    for pattern, repl in _REASON_VALUES:
        text = pattern.sub(repl, text)
    return text


# Stable codes for the kinds of reason decode and validate write, most specific first; a code
# names the rule and the field, so counts group the same way whatever values the records held.
_REASON_CODES = [
    (re.compile(r"^missing required field '([^']+)'"), "missing_field:{0}"),
    (re.compile(r"^field '([^']+)' = .* is not one of"), "not_in_enum:{0}"),
    (re.compile(r"^field '([^']+)' = .* is below min"), "below_min:{0}"),
    (re.compile(r"^field '([^']+)' = .* is above max"), "above_max:{0}"),
    (re.compile(r"^field '([^']+)' = .* does not match pattern"), "pattern_mismatch:{0}"),
    (re.compile(r"^field '([^']+)' is \d+ long, above max_length"), "too_long:{0}"),
    (re.compile(r"^field '([^']+)': .* does not fit in"), "out_of_range:{0}"),
    (re.compile(r"^field '([^']+)': .* is not an ISO-8601"), "bad_timestamp:{0}"),
    (re.compile(r"^field '([^']+)': expected "), "wrong_type:{0}"),
    (re.compile(r"^no event time"), "no_event_time"),
    (re.compile(r"^value is not valid UTF-8"), "not_utf8"),
    (re.compile(r"^value is empty"), "empty_value"),
    (re.compile(r"^value is a JSON \w+, expected an object"), "not_an_object"),
    (re.compile(r"^(malformed|invalid) JSON"), "malformed_json"),
    (re.compile(r"^tombstone"), "tombstone"),
    (re.compile(r"^unsupported CloudEvents specversion"), "ce_specversion"),
    (re.compile(r"^not a CloudEvent"), "not_a_cloudevent"),
]


def reason_code(reason: str | None) -> str:
    """A stable, short code for the kind of problem: `wrong_type:cost_micros`, `not_utf8`, …

    Reasons no rule knows group under their value-free text (`reason_kind`)."""
    text = reason or ""
    for pattern, code in _REASON_CODES:
        m = pattern.search(text)
        if m:
            return code.format(*m.groups())
    return reason_kind(reason)


@dataclass(frozen=True)
class QuarantineCount:
    reason: str  # the kind of reason, whole: the first record's message without its values
    hour: str
    records: int
    code: str = ""  # reason_code: what the counts group by
    sample: str = ""  # one record's whole message, as quarantined


def quarantine_files(metastore: Metastore, product: str) -> list[FileRecord]:
    return metastore.live_files(product, kinds=("quarantine",))


def read_quarantine(lake: Lake, metastore: Metastore, product: str, columns: list[str] | None = None) -> pa.Table:
    """Every live quarantined row of the product, with `_hour` (the file's hour) appended."""
    tables = []
    for f in quarantine_files(metastore, product):
        t = lake.read_table(f.path, columns)
        tables.append(t.append_column("_hour", pa.array([f.hour] * t.num_rows, pa.string())))
    if not tables:
        return pa.table({"_hour": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive")


def quarantine_counts(lake: Lake, metastore: Metastore, product: str) -> list[QuarantineCount]:
    """Live quarantined records counted by kind of reason and hour, most frequent first."""
    counts: Counter[tuple[str, str]] = Counter()
    samples: dict[str, str] = {}
    for f in quarantine_files(metastore, product):
        reasons = lake.read_table(f.path, ["_error"]).column("_error")
        for item in pc.value_counts(reasons.combine_chunks()).to_pylist():
            code = reason_code(item["values"])
            samples.setdefault(code, item["values"] or "(no reason)")
            counts[(code, f.hour)] += item["counts"]
    return [
        QuarantineCount(reason_kind(samples[code]), hour, n, code, samples[code])
        for (code, hour), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0]))
    ]


def quarantine_by_reason(errors: Iterable[str | None]) -> list[tuple[str, int, str]]:
    """(code, records, one whole sample message) per kind of reason, most frequent first."""
    counts: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for e in errors:
        code = reason_code(e)
        counts[code] += 1
        samples.setdefault(code, e or "(no reason)")
    return [(code, n, samples[code]) for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


# --- replay ----------------------------------------------------------------------------------


@dataclass
class ReplayedFile:
    quarantine_file: str
    records: int
    replayed: int
    still_quarantined: int
    landed_files: list[str] = field(default_factory=list)
    hours: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None


@dataclass
class ReplayResult:
    product: str
    run_id: str
    files: list[ReplayedFile]
    reopened_hours: list[str]
    dry_run: bool = False

    @property
    def replayed(self) -> int:
        return sum(f.replayed for f in self.files)

    @property
    def still_quarantined(self) -> int:
        return sum(f.still_quarantined for f in self.files)

    @property
    def hours(self) -> dict[str, int]:
        merged: Counter[str] = Counter()
        for f in self.files:
            merged.update(f.hours)
        return dict(sorted(merged.items()))


def replay_id(path: str) -> str:
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:12]


def _batch(rows: pa.Table, partition: int) -> Batch:
    ts = pc.cast(rows.column("_timestamp"), pa.int64()).to_pylist()
    return Batch(
        partition=partition,
        values=rows.column("_raw").to_pylist(),
        keys=[original_key(k) for k in rows.column("_key").to_pylist()],
        offsets=rows.column("_offset").to_pylist(),
        timestamps=[-1 if t is None else t for t in ts],
    )


def _stats(path: str, rows: pa.Table, size: int) -> FileStats:
    offsets = rows.column("_offset")
    return FileStats(
        path=path, rows=rows.num_rows, bytes=size,
        min_offset=pc.min(offsets).as_py(), max_offset=pc.max(offsets).as_py(),
    )


def replay_quarantine(
    spec: DataProductSpec,
    *,
    lake: Lake,
    metastore: Metastore,
    run_id: str | None = None,
    dry_run: bool = False,
    lease_s: float = REPLAY_LEASE_S,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Land the quarantined records that pass under the current spec, exactly once.

    `progress(done, total)` is called with quarantine files handled so far, for a bar."""
    run_id = run_id or f"replay-{uuid.uuid4().hex[:12]}"
    run = RunContext(lake=lake, metastore=metastore, run_id=run_id, lease_s=lease_s)  # what each file's replay carries
    owner = uuid.uuid4().hex
    results: list[ReplayedFile] = []
    reopened: set[str] = set()
    todo = quarantine_files(metastore, spec.name)
    for done, qf in enumerate(todo):
        if progress is not None:
            progress(done, len(todo))
        try:
            table = lake.read_table(qf.path)
        except FileNotFoundError:
            if metastore.file_states([qf.path]).get(qf.path) == "committed":
                raise  # live but missing: not ours to explain away
            # Replayed (and deleted) by another run since it was listed: nothing left to land.
            results.append(ReplayedFile(qf.path, 0, 0, 0, skipped=f"{qf.path} was replayed by another run meanwhile"))
            continue
        if table.num_rows == 0:
            continue
        topic = table.column("_topic")[0].as_py()
        decoder = decoder_for(spec, topic)
        partition = qf.partition if qf.partition is not None else table.column("_partition")[0].as_py()
        # Decode in offset order: a file holds one partition's range, but be safe with rows.
        table = table.sort_by("_offset")
        decoded = decoder.decode(_batch(table, int(partition)))
        outcome = ReplayedFile(qf.path, table.num_rows, decoded.valid.num_rows, decoded.invalid.num_rows)
        hours = [hour_key(h) for h in decoded.hours.to_pylist()]
        for h in hours:
            outcome.hours[h] = outcome.hours.get(h, 0) + 1
        results.append(outcome)
        if decoded.valid.num_rows == 0 or dry_run:
            continue
        try:
            reopened |= set(_replay_file(spec, run, owner, qf, topic, decoded, hours, outcome))
        except (ClaimHeldError, CommitConflictError) as exc:
            # Another replay holds or already replayed this file: it is not ours to land.
            outcome.skipped, outcome.replayed, outcome.landed_files, outcome.hours = str(exc), 0, [], {}
            log.warning("%s", exc)
    if progress is not None:
        progress(len(todo), len(todo))
    for hour in sorted(reopened):
        lake.delete(f"{hour_dir(spec.name, hour)}/{SUCCESS}")
    return ReplayResult(spec.name, run_id, results, sorted(reopened), dry_run)


def _replay_file(
    spec: DataProductSpec,
    run: RunContext,
    owner: str,
    qf: FileRecord,
    topic: str,
    decoded,
    hours: list[str],
    outcome: ReplayedFile,
) -> list[str]:
    """Land one quarantine file's rows that now pass, under its own claim held by `owner`, in
    `run` (its lake, metastore, run id and claim lease); returns the hours it reopened."""
    lake, metastore, run_id = run.require_lake(f"replaying the quarantine of {spec.name}"), run.metastore, run.run_id
    rid = replay_id(qf.path)
    claim = f"replay/{rid}"
    metastore.claim(spec.name, claim, owner, run_id, run.lease_s, on_delete=lake.delete)
    # The file was listed before the claim was ours: another replay may have landed it since
    # (two replays at once). Its output files carry the same names, so stop before touching them.
    if metastore.file_states([qf.path]).get(qf.path) != "committed":
        metastore.release(spec.name, claim, owner)
        raise CommitConflictError(f"{spec.name}: quarantine file {qf.path} was replayed by another run meanwhile")
    partition = int(qf.partition or 0)
    start = int(qf.start_offset or 0)
    base = f"{topic}+{partition}+{start}"
    landed: list[tuple[FileStats, str]] = []
    plan: list[tuple[str, str, str, pa.Table]] = []  # (path, kind, hour, rows)
    registered: list[str] = []  # registered pending by this attempt: the only files it may delete
    try:
        hour_col = pa.array(hours, pa.string())
        for h in sorted(set(hours)):
            rows = decoded.valid.filter(pc.equal(hour_col, h))
            plan.append((f"{hour_dir(spec.name, h)}/{base}.replay-{rid}.parquet", "landed", h, rows))
        if decoded.invalid.num_rows:
            plan.append((f"{os.path.dirname(qf.path)}/{base}.q-{rid}.parquet", "quarantine", qf.hour, decoded.invalid))
        for path, kind, h, _ in plan:
            metastore.register_pending(
                path, product=spec.name, kind=kind, hour=h, claim=claim, run_id=run_id,
                partition=partition, start_offset=start,
            )
            registered.append(path)
        still: list[tuple[FileStats, str]] = []
        for path, kind, h, rows in plan:
            size = lake.write_parquet(path, rows, spec.sinks.lake.row_group_rows)
            (landed if kind == "landed" else still).append((_stats(path, rows, size), h))
        reopened = metastore.commit_replay(
            product=spec.name, claim=claim, owner=owner, run_id=run_id, quarantine_file=qf.path,
            landed=landed, still_quarantined=still,
        )
    except BaseException:
        # Never a file this attempt did not register, and never one that is live: a commit in
        # doubt may have gone through (as landing's _abandon); unknown states leave all to the
        # next claimant.
        try:
            states = metastore.file_states(registered)
        except Exception:  # noqa: BLE001
            states = {}
        paths = [p for p in registered if states.get(p) == "pending"]
        for path in paths:
            try:
                lake.delete(path)
            except Exception:  # the next claimant deletes it
                log.warning("deleting pending replay file %s failed", path, exc_info=True)
        try:
            metastore.forget_files(paths, only_pending=True)
            metastore.release(spec.name, claim, owner)
        except Exception:  # the lease expires on its own
            log.warning("cleaning up replay claim %s failed", claim, exc_info=True)
        raise
    outcome.landed_files = [s.path for s, _ in landed]
    # The old quarantine file is no longer live; forget it once it is gone from the lake.
    try:
        lake.delete(qf.path)
        metastore.drop_replaced([qf.path])
    except Exception:  # a replaced file is never read; cleanup can wait
        log.warning("removing replayed quarantine file %s failed", qf.path, exc_info=True)
    return reopened
