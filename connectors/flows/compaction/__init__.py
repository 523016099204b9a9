"""Compaction of closed hours into few sorted files, verified row for row.

ranges (offset runs a file holds) → verify (row fingerprints) → rewrite (read, sort, write) →
hours (claim an hour, rewrite, swap in the metastore, mark `_SUCCESS`; which hours are due)."""

from __future__ import annotations

from connectors.flows.compaction.hours import (
    CompactionResult,
    DueHour,
    HourBlockedError,
    SkippedHour,
    compact_closed_hours,
    compact_hour,
    hour_closes_at,
    hour_is_closed,
    hours_due,
    read_marker,
)
from connectors.flows.compaction.ranges import (
    MAX_RANGES_PER_PARTITION,
    merge_ranges,
    offset_ranges,
    ranges_of_sorted,
    sorted_pairs,
)
from connectors.flows.compaction.rewrite import (
    MIN_ROW_GROUP_ROWS,
    READ_BATCH_ROWS,
    Output,
    RewriteJob,
    Rewritten,
    Source,
    compacted_file_name,
    conform,
    rewrite_hour,
    sort_columns,
    sources_of,
)
from connectors.flows.compaction.verify import (
    Fingerprint,
    VerificationError,
    verify_same_rows,
)
from connectors.flows.context import DEFAULT_LEASE_S

__all__ = [
    "RewriteJob",
    "Rewritten",
    "CompactionResult",
    "DEFAULT_LEASE_S",
    "DueHour",
    "Fingerprint",
    "HourBlockedError",
    "MAX_RANGES_PER_PARTITION",
    "MIN_ROW_GROUP_ROWS",
    "Output",
    "READ_BATCH_ROWS",
    "SkippedHour",
    "Source",
    "VerificationError",
    "compact_closed_hours",
    "compact_hour",
    "compacted_file_name",
    "conform",
    "hour_closes_at",
    "hour_is_closed",
    "hours_due",
    "merge_ranges",
    "offset_ranges",
    "ranges_of_sorted",
    "read_marker",
    "rewrite_hour",
    "sort_columns",
    "sorted_pairs",
    "sources_of",
    "verify_same_rows",
]
