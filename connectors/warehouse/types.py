"""The one mapping from spec types to SQL types, per dialect, and back (for schema evolution)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_types
from sqlalchemy.engine import Engine

from connectors.spec import FieldSpec

# Length of string/bytes columns that are part of a MySQL primary key (or have max_length):
# InnoDB indexes at most 3072 bytes, so 255 utf8mb4 characters leave room for composite keys.
MYSQL_KEY_LENGTH = 255


def column_type(f: FieldSpec, dialect: str, in_key: bool) -> sa.types.TypeEngine:
    """The SQL type of a spec field in a dialect ('postgresql', 'mysql', 'sqlite')."""
    t = f.type
    if t == "string":
        if dialect == "mysql":
            if in_key or (f.max_length is not None and f.max_length <= 16_000):
                return sa.String(f.max_length or MYSQL_KEY_LENGTH)
            return mysql_types.LONGTEXT()
        return sa.Text()
    if t == "bytes":
        if dialect == "mysql":
            if in_key or (f.max_length is not None and f.max_length <= 16_000):
                return mysql_types.VARBINARY(f.max_length or MYSQL_KEY_LENGTH)
            return mysql_types.LONGBLOB()
        return sa.LargeBinary()
    if t == "int32":
        return sa.Integer()
    if t == "int64":
        return sa.BigInteger()
    if t == "float64":
        return sa.Double()
    if t == "decimal":  # numeric(p,s) / DECIMAL(p,s); SQLite has no exact decimal: its plain text
        if dialect == "sqlite":
            return sa.Text()
        if dialect == "mysql":
            return mysql_types.DECIMAL(f.precision, f.scale or 0)
        return sa.Numeric(f.precision, f.scale or 0)
    if t == "boolean":
        return sa.Boolean()
    if t == "timestamp":
        # PostgreSQL keeps the zone (timestamptz); MariaDB and SQLite store UTC wall time.
        return mysql_types.DATETIME(fsp=6) if dialect == "mysql" else sa.DateTime(timezone=True)
    if t == "date":
        return sa.Date()
    raise ValueError(f"no SQL type for spec type {t!r}")  # pragma: no cover - spec validates


# What a reflected column type is, compared with a spec type ("family").
SQL_NAMES = {"int32": "INTEGER", "int64": "BIGINT", "float64": "DOUBLE", "boolean": "BOOLEAN",
              "timestamp": "TIMESTAMP", "date": "DATE", "string": "TEXT", "bytes": "BINARY",
              "decimal": "NUMERIC(precision, scale)"}


def fits(sql_type: sa.types.TypeEngine, dialect: str, f: FieldSpec) -> bool:
    """Whether an existing column holds the spec field: its family, and for a decimal, an
    exact NUMERIC/DECIMAL (SQLite: TEXT) of the spec's precision and scale."""
    if f.type != "decimal":
        return family(sql_type, dialect) == f.type
    if dialect == "sqlite":
        return isinstance(sql_type, sa.String)
    return (isinstance(sql_type, sa.Numeric) and not isinstance(sql_type, sa.Float)
            and (sql_type.precision, sql_type.scale or 0) == (f.precision, f.scale or 0))


def family(sql_type: sa.types.TypeEngine, dialect: str) -> str | None:
    if isinstance(sql_type, sa.Boolean) or (dialect == "mysql" and isinstance(sql_type, mysql_types.TINYINT)):
        return "boolean"
    if isinstance(sql_type, sa.BigInteger):
        return "int64"
    if isinstance(sql_type, sa.Integer):
        name = type(sql_type).__name__.upper()
        return "int64" if "BIG" in name else "int32"
    if isinstance(sql_type, sa.Float | sa.Numeric):
        return "float64"
    if isinstance(sql_type, sa.DateTime):
        return "timestamp"
    if isinstance(sql_type, sa.Date):
        return "date"
    if isinstance(sql_type, sa.String):
        return "string"
    if isinstance(sql_type, sa.LargeBinary | sa.types._Binary):
        return "bytes"
    return None


def render_type(sql_type: sa.types.TypeEngine, engine: Engine) -> str:
    try:
        return sql_type.compile(dialect=engine.dialect)
    except sa.exc.CompileError:  # pragma: no cover - exotic reflected types the dialect cannot render
        return type(sql_type).__name__.upper()
