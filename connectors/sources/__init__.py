"""Source connectors: bring data that is not on Kafka yet into a topic (sql: query-based)."""

from __future__ import annotations

from connectors.sources.common import UnsetVariableError, expand_vars
from connectors.sources.sql import (
    CLAIM_PRODUCT,
    CLAIM_RESOURCE,
    CURSOR_TABLE,
    SOURCE_LEASE_S,
    Cursor,
    Mode,
    PublishResult,
    SourceCloudEventsSpec,
    SourceConnectionSpec,
    SourceError,
    SourceSpec,
    cursors,
    load_sources,
    parse_source_file,
    publish,
    read_cursor,
    reset_cursor,
    rows_waiting,
)

__all__ = [
    "CLAIM_PRODUCT",
    "CLAIM_RESOURCE",
    "CURSOR_TABLE",
    "SOURCE_LEASE_S",
    "Cursor",
    "Mode",
    "PublishResult",
    "SourceCloudEventsSpec",
    "SourceConnectionSpec",
    "SourceError",
    "SourceSpec",
    "UnsetVariableError",
    "cursors",
    "expand_vars",
    "load_sources",
    "parse_source_file",
    "publish",
    "read_cursor",
    "reset_cursor",
    "rows_waiting",
]
