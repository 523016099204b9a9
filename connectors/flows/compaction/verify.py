"""Row fingerprints: a compaction (or a replay) proves its outputs hold exactly its inputs' rows."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa

from connectors.errors import TerminalError
from connectors.flows.compaction.ranges import sorted_pairs


class VerificationError(TerminalError, RuntimeError):
    """The rewritten files do not hold exactly the input rows: nothing was swapped."""


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
