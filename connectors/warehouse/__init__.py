"""The warehouse: UPSERT of what the lake committed into a product's table, exactly once.

types (spec → SQL) → reduce (latest per key) → sink (one table; dialects/ per database) → lake_sync
(from the lake, windows past the sink's offsets)."""

from __future__ import annotations

from connectors.warehouse.dialects import (
    COPY_CHUNK_ROWS,
    STAGE_TABLE,
    Dialect,
    copy_csv_chunks,
    dialect_for,
)
from connectors.warehouse.lake_sync import (
    READ_RETRIES,
    plan_windows,
    read_window,
    sync,
)
from connectors.warehouse.reduce import (
    POSITION,
    reduce_latest,
    version_columns,
)
from connectors.warehouse.results import (
    BatchCounts,
    SyncResult,
)
from connectors.warehouse.sink import (
    OFFSETS_TABLE,
    REPLAY_SLOT,
    ConcurrentSyncError,
    WarehouseError,
    WarehouseRefusedError,
    WarehouseSchemaError,
    WarehouseSink,
    tombstone_table_name,
)
from connectors.warehouse.types import (
    MYSQL_KEY_LENGTH,
    SQL_NAMES,
    column_type,
    family,
    render_type,
)

__all__ = [
    "BatchCounts",
    "COPY_CHUNK_ROWS",
    "ConcurrentSyncError",
    "Dialect",
    "MYSQL_KEY_LENGTH",
    "OFFSETS_TABLE",
    "POSITION",
    "READ_RETRIES",
    "REPLAY_SLOT",
    "SQL_NAMES",
    "STAGE_TABLE",
    "SyncResult",
    "WarehouseError",
    "WarehouseRefusedError",
    "WarehouseSchemaError",
    "WarehouseSink",
    "column_type",
    "copy_csv_chunks",
    "dialect_for",
    "family",
    "plan_windows",
    "read_window",
    "reduce_latest",
    "render_type",
    "sync",
    "tombstone_table_name",
    "version_columns",
]
