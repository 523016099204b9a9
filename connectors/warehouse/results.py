"""What a sync did: per-batch counts and the sync's result (with the lines the CLI and demo print)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BatchCounts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped_stale: int = 0
    reduced: int = 0  # records dropped by the per-key reduction (an older record of a key in the batch)
    skipped_null_key: int = 0  # records whose key has a null; they cannot address a row

    def add(self, other: BatchCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class SyncResult:
    product: str
    table: str
    dialect: str
    url: str  # password hidden
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped_stale: int = 0
    reduced: int = 0
    skipped_null_key: int = 0
    rows_read: int = 0
    batches: int = 0
    offsets_before: dict[int, int] = field(default_factory=dict)
    offsets_after: dict[int, int] = field(default_factory=dict)
    target_offsets: dict[int, int] = field(default_factory=dict)  # the committed snapshot synced to
    added_columns: list[str] = field(default_factory=list)
    blocked_hours: list[str] = field(default_factory=list)  # hours a blocking check stopped
    replays_applied: int = 0  # quarantine replays brought in (their records carry old offsets)
    table_rows: int | None = None
    duration_s: float = 0.0

    @property
    def counts(self) -> BatchCounts:
        return BatchCounts(self.inserted, self.updated, self.deleted, self.skipped_stale,
                           self.reduced, self.skipped_null_key)

    def add_counts(self, counts: BatchCounts) -> None:
        for name in BatchCounts.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(counts, name))

    def lines(self) -> list[str]:
        """What `flowsuite warehouse sync` and the demo print about this sync."""
        offsets = ", ".join(f"p{p}: {self.offsets_before.get(p, 0):,} → {n:,}" for p, n in sorted(self.offsets_after.items()))
        lines = [
            f"table {self.table} in {self.url}: {self.table_rows:,} rows",
            f"this sync: {self.inserted:,} inserted, {self.updated:,} updated, {self.deleted:,} deleted, "
            f"{self.skipped_stale:,} stale skipped ({self.rows_read:,} rows read in {self.batches} batch(es), "
            f"{self.duration_s:.2f}s)",
            f"sink offsets (kept in the warehouse): {offsets or 'none yet'}",
        ]
        if self.added_columns:
            lines.append(f"added columns: {', '.join(self.added_columns)}")
        if self.blocked_hours:
            lines.append(f"stopped before hours blocked by a quality check: {', '.join(self.blocked_hours)}")
        return lines
