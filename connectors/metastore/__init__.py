"""The metastore: tables, engines and locks, and the `Metastore` that claims, commits and lists."""

from __future__ import annotations

from connectors.leases import ClaimLostError
from connectors.metastore.db import (
    SCHEMA_LOCK_WAIT_S,
    create_missing_tables,
    insert_ignore,
    make_engine,
    retrying,
    schema_lock,
)
from connectors.metastore.store import (
    ClaimHeldError,
    CommitConflictError,
    FileRecord,
    FileStats,
    HourRecord,
    Metastore,
    OffsetState,
    ReplayRecord,
    Takeover,
    hour_resource,
    landing_resource,
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
    "CommitConflictError",
    "FileRecord",
    "FileStats",
    "HourRecord",
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
    "replays",
    "retrying",
    "schema_lock",
]
