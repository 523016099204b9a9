"""One strategy per warehouse database (base.py says what differs); `dialect_for(sink)` picks it."""

from __future__ import annotations

from typing import Any

from connectors.warehouse.dialects.base import STAGE_TABLE, Dialect, python_rows
from connectors.warehouse.dialects.mysql import MySQLDialect
from connectors.warehouse.dialects.postgres import COPY_CHUNK_ROWS, PostgresDialect, copy_csv_chunks
from connectors.warehouse.dialects.sqlite import SQLiteDialect

DIALECTS: dict[str, type[Dialect]] = {
    "postgresql": PostgresDialect,
    "mysql": MySQLDialect,
    "sqlite": SQLiteDialect,
}


def dialect_for(sink: Any) -> Dialect:
    """The strategy of `sink.dialect` ('postgresql', 'mysql' for MariaDB too, 'sqlite')."""
    return DIALECTS[sink.dialect](sink)


__all__ = [
    "COPY_CHUNK_ROWS", "DIALECTS", "STAGE_TABLE", "Dialect", "MySQLDialect", "PostgresDialect", "SQLiteDialect",
    "copy_csv_chunks", "dialect_for", "python_rows",
]
