"""What every format's decoder reads and returns: a `Batch` of one partition's messages in,
`Decoded` (valid rows, their hours, quarantined rows) out. Nothing here knows Kafka or the lake."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

_INT32_MAX = 2**31 - 1


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


def binary_array(values: list[bytes | None]) -> pa.Array:
    """A binary array of Python bytes (None → null), built from one joined buffer and numpy
    offsets: `pa.array(values, pa.binary())` inspects every item in Python and costs 0.7 µs
    per value — 0.21 s of a 300k-record landing run for the keys alone; this costs 0.04 µs."""
    n = len(values)
    nulls = None in values
    present = [b"" if v is None else v for v in values] if nulls else values
    lengths = np.fromiter(map(len, present), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > _INT32_MAX:  # past binary's 32-bit offsets: let Arrow chunk or refuse it
        return pa.array(values, pa.binary())
    validity = None
    if nulls:
        valid = np.fromiter((v is not None for v in values), dtype=bool, count=n)
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.binary(), n, [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(present))]
    )
