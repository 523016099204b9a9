"""The metastore: which files are live, which offsets are committed, which hours are closed.

tables (the schema batch readers may query) → db (engines, schema locks, retries) → records →
claiming (one owner per unit of work) → store (`Metastore`: the commits and queries)."""

from __future__ import annotations

from connectors.leases import ClaimLostError
from connectors.metastore.claiming import (
    Claims,
    own_claim,
)
from connectors.metastore.db import (
    SCHEMA_LOCK_WAIT_S,
    create_missing_tables,
    insert_ignore,
    make_engine,
    reading,
    retrying,
    schema_lock,
)
from connectors.metastore.records import (
    ClaimHeldError,
    CommitConflictError,
    CommittedFileError,
    FileRecord,
    FileStats,
    HourRecord,
    LandingCommit,
    OffsetState,
    ReplayRecord,
    Takeover,
    hour_resource,
    landing_resource,
)
from connectors.metastore.store import (
    Metastore,
)
from connectors.metastore.tables import (
    claims,
    files,
    hours,
    landings,
    markers,
    metadata,
    offsets,
    replays,
)

__all__ = [
    "ClaimHeldError",
    "ClaimLostError",
    "Claims",
    "CommitConflictError",
    "CommittedFileError",
    "FileRecord",
    "FileStats",
    "HourRecord",
    "LandingCommit",
    "Metastore",
    "OffsetState",
    "ReplayRecord",
    "SCHEMA_LOCK_WAIT_S",
    "Takeover",
    "claims",
    "create_missing_tables",
    "files",
    "hour_resource",
    "hours",
    "insert_ignore",
    "landing_resource",
    "landings",
    "make_engine",
    "markers",
    "metadata",
    "offsets",
    "own_claim",
    "reading",
    "replays",
    "retrying",
    "schema_lock",
]
