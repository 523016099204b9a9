"""What differs between warehouse databases, one strategy object per database.

`WarehouseSink` (connectors/warehouse/sink.py) writes a batch the same way everywhere: stage
the rows, remember winning tombstones, delete, then upsert the records guarded by the version
columns. How the stage is created, filled and dropped, how an INSERT … SELECT resolves key
conflicts, and how the upsert counts inserts vs updates are the dialect's: `Dialect` holds
the generic (executemany, count-then-upsert) way, postgres.py/mysql.py/sqlite.py their own.
A dialect reads the sink's table, key and version guard through `sink`; it never imports it.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connectors.formats.schema import decimal_text

STAGE_TABLE = "flowsuite_stage"


def python_rows(data: pa.Table) -> list[dict]:
    """Arrow → dicts for executemany (SQLite, MariaDB). Timestamps become naive UTC."""
    columns = {}
    for name in data.column_names:
        col = data.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us", tz="UTC"))
            values = [None if v is None else v.astimezone(UTC).replace(tzinfo=None) for v in col.to_pylist()]
        elif pa.types.is_decimal(col.type):  # text: exact in DECIMAL/NUMERIC, and SQLite's TEXT column
            values = decimal_text(col).to_pylist()
        else:
            values = col.to_pylist()
        columns[name] = values
    names = list(columns)
    return [dict(zip(names, vals, strict=True)) for vals in zip(*columns.values(), strict=True)]


class Dialect:
    """The generic strategy: executemany into a temporary stage, counts taken before the upsert."""

    name = "generic"
    drop_stage = "DROP TABLE"  # `DROP TEMPORARY TABLE` on MySQL, where a plain DROP commits

    def __init__(self, sink: Any):
        self.sink = sink

    # --- the stage ------------------------------------------------------------------------

    def stage_table_kwargs(self) -> dict[str, Any]:
        return {}

    def open_stage(self, conn: Connection, stage: sa.Table) -> None:
        conn.execute(sa.text(f"{self.drop_stage} IF EXISTS {STAGE_TABLE}"))
        stage.create(conn)

    def load_stage(self, conn: Connection, stage: sa.Table, data: pa.Table) -> None:
        conn.execute(sa.insert(stage), python_rows(data))

    def close_stage(self, conn: Connection) -> None:
        conn.exec_driver_sql(f"{self.drop_stage} {STAGE_TABLE}")

    # --- writing --------------------------------------------------------------------------

    def write_direct(self, conn: Connection, rows: pa.Table) -> bool:
        """Write the batch without a stage when that is safe; False: take the staging path."""
        return False

    def upsert_select(self, conn: Connection, target: sa.Table, names: list[str], sel, order: list[str]) -> None:
        """INSERT INTO target SELECT … where a key conflict updates `order` only if newer."""
        raise NotImplementedError

    def upsert_records(self, conn: Connection, stage: sa.Table, sel, names: list[str], n_records: int,
                       counts: Any) -> None:
        """Upsert the staged records (`sel`) into the table and add to `counts`."""
        sink, s, t = self.sink, stage.c, self.sink.table.c
        on_row = sa.select(
            sa.func.count(sa.case((sink.newer(s, t), 1))),
            sa.func.count(),
        ).select_from(stage.join(sink.table, sink.key_match(s, t))).where(s["_deleted"] == sa.false())
        updates, existing = conn.execute(on_row).one()
        blocked = 0
        tomb = sink.tombstones
        if tomb is not None:
            tb = tomb.c
            blocked = conn.execute(
                sa.select(sa.func.count()).select_from(stage.join(tomb, sink.key_match(s, tb)))
                .where(sa.and_(s["_deleted"] == sa.false(), sa.not_(sink.newer(s, tb))))
            ).scalar_one()
        self.upsert_select(conn, sink.table, names, sel, sink.update_order(names))
        counts.updated += int(updates)
        counts.skipped_stale += int(existing) - int(updates) + int(blocked)
        counts.inserted += n_records - int(existing) - int(blocked)
