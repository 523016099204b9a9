"""The warehouse: UPSERT of what the lake committed into a product's table, exactly once."""

from __future__ import annotations

from connectors.warehouse.dialects import (
    COPY_CHUNK_ROWS,
    STAGE_TABLE,
    Dialect,
    copy_csv_chunks,
    dialect_for,
)
from connectors.warehouse.sink import (
    MYSQL_KEY_LENGTH,
    OFFSETS_TABLE,
    POSITION,
    READ_RETRIES,
    REPLAY_SLOT,
    BatchCounts,
    ConcurrentSyncError,
    SyncResult,
    WarehouseError,
    WarehouseSchemaError,
    WarehouseSink,
    column_type,
    plan_windows,
    read_window,
    reduce_latest,
    sync,
    tombstone_table_name,
    version_columns,
)

__all__ = [
    "Dialect",
    "dialect_for",
    "BatchCounts",
    "COPY_CHUNK_ROWS",
    "ConcurrentSyncError",
    "MYSQL_KEY_LENGTH",
    "OFFSETS_TABLE",
    "POSITION",
    "READ_RETRIES",
    "REPLAY_SLOT",
    "STAGE_TABLE",
    "SyncResult",
    "WarehouseError",
    "WarehouseSchemaError",
    "WarehouseSink",
    "column_type",
    "copy_csv_chunks",
    "plan_windows",
    "read_window",
    "reduce_latest",
    "sync",
    "tombstone_table_name",
    "version_columns",
]
