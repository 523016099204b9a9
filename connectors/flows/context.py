"""What every step of one run carries: where it reads and writes, and who is running.

A run (a Dagster step, an Airflow task try, a CLI command) hands its steps one `RunContext`
instead of the same eight values at each call: the lake, the metastore, the broker and its
client settings, the run id recorded with claims and files, how to tell a dead claim holder,
the claim lease and the clock. `connectors.engine.Engine.run_context()` builds one from the
engine's settings; tests build one directly. Landing, compaction and replay take one; so do a
source's `publish` and a CDC `capture`, which write no lake: their callers may pass `lake=None`,
and the steps that write one ask for it with `require_lake`, which names the step when it is missing.
The clock decides what time it is for the run: which hours are closed, which source rows are
older than their delay.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from connectors.errors import TerminalError
from connectors.lake import Lake
from connectors.leases import SYSTEM_CLOCK, Clock
from connectors.metastore import Metastore

DEFAULT_LEASE_S = 30.0


class NoLakeError(TerminalError, ValueError):
    """A step that writes the lake was given a run context without one."""


@dataclass(frozen=True)
class RunContext:
    lake: Lake | None  # None for steps that write no lake (a source's publish, a CDC capture)
    metastore: Metastore
    bootstrap: str = ""  # Kafka bootstrap servers (steps that read or write a topic)
    kafka_config: Mapping[str, Any] = field(default_factory=dict, repr=False)  # passed through, secrets included
    run_id: str = field(default_factory=lambda: f"adhoc-{uuid.uuid4().hex[:12]}")  # recorded with claims and files
    is_dead: Callable[[str], bool] | None = field(default=None, repr=False)  # has the run holding a claim failed?
    lease_s: float = DEFAULT_LEASE_S  # a claim's lease, renewed while the run lives
    clock: Clock = field(default=SYSTEM_CLOCK, repr=False)  # epoch seconds

    def require_lake(self, step: str) -> Lake:
        """The lake `step` writes; a context without one (built for publish or capture) is refused."""
        if self.lake is None:
            raise NoLakeError(f"{step} writes the lake, but run {self.run_id} was given none (lake=None)")
        return self.lake

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def with_values(self, **values: Any) -> RunContext:
        return replace(self, **values)
