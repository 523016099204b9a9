"""What every format's decoder reads and returns: a `Batch` of one partition's messages in,
`Decoded` (valid rows, their hours, quarantined rows) out. Nothing here knows Kafka or the lake."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass
class Batch:
    """Messages of one partition, in offset order."""

    partition: int
    values: list[bytes | None]
    keys: list[bytes | None]
    offsets: list[int]
    timestamps: list[int]  # epoch milliseconds (-1 when the broker has none)
    headers: list[list[tuple[str, bytes]] | None] | None = None

    def __len__(self) -> int:
        return len(self.offsets)


@dataclass
class Decoded:
    valid: pa.Table  # value columns, provenance columns, and `_deleted` when deletes are on
    hours: pa.Array  # per valid row: event-time hour as epoch hours (int64)
    invalid: pa.Table  # QUARANTINE_SCHEMA

    @property
    def consumed(self) -> int:
        return self.valid.num_rows + self.invalid.num_rows
