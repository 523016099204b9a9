"""What the metastore hands out and raises: plain records of its rows, and its errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from connectors.errors import TerminalError, TransientError


class ClaimHeldError(TerminalError, RuntimeError):
    """Another live run owns this unit of work."""

    def __init__(self, product: str, resource: str, run_id: str, lease_left: float):
        self.product, self.resource, self.run_id = product, resource, run_id
        super().__init__(
            f"{product}: {resource} is claimed by run {run_id} (lease {lease_left:.0f}s left); "
            "this run writes nothing for it"
        )


class CommittedFileError(TerminalError, RuntimeError):
    """A run was about to register, as pending, a path the metastore holds as committed: writing
    it would overwrite live data (two products or specs sharing a topic and folder)."""


class CommitConflictError(TransientError, RuntimeError):
    """The committed offset moved under us: someone else committed this range."""


@dataclass(frozen=True)
class OffsetState:
    partition: int
    next_offset: int
    at_eof: bool
    run_id: str
    updated_at: float
    topic: str = ""  # the topic these offsets were read from


@dataclass(frozen=True)
class Takeover:
    """What taking a claim found: the previous owner's run, and the pending files it deleted."""

    previous_run_id: str | None
    pending_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FileStats:
    path: str
    rows: int
    bytes: int
    end_offset: int | None = None
    min_offset: int | None = None
    max_offset: int | None = None
    ranges: dict[int, list[list[int]]] | None = None


@dataclass(frozen=True)
class LandingCommit:
    """What one landing run commits for one partition: the range [start, end) it read, the files
    it wrote for it, and the claim (`owner`) and run that did; `Metastore.commit_landing` makes it
    live in one transaction."""

    product: str
    topic: str
    partition: int
    start: int
    end: int
    at_eof: bool
    owner: str
    run_id: str
    landed: Sequence[tuple[FileStats, str]]  # (stats, hour)
    quarantined: Sequence[tuple[FileStats, str]]
    consumed: int


@dataclass(frozen=True)
class FileRecord:
    path: str
    product: str
    kind: str
    hour: str
    state: str
    partition: int | None
    start_offset: int | None
    end_offset: int | None
    rows: int
    bytes: int
    generation: int
    ranges: dict[int, list[list[int]]] | None
    min_offset: int | None
    max_offset: int | None
    run_id: str
    committed_at: float | None


@dataclass(frozen=True)
class HourRecord:
    product: str
    hour: str
    state: str
    generation: int
    landed_rows: int
    quarantined_rows: int
    first_landed_at: float | None
    last_landed_at: float | None
    compacted_at: float | None
    compacted_rows: int | None
    reopened_at: float | None
    blocked_reason: str | None = None
    blocked_at: float | None = None


@dataclass(frozen=True)
class ReplayRecord:
    id: int
    product: str
    path: str
    hour: str
    partition: int
    min_offset: int
    max_offset: int
    rows: int


def landing_resource(partition: int, start: int) -> str:
    return f"partition/{int(partition)}/{int(start)}"


def hour_resource(hour: str) -> str:
    return f"hour/{hour}"
