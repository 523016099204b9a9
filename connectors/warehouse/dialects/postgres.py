"""PostgreSQL: COPY (CSV written by Arrow) into an ON COMMIT DROP stage, ON CONFLICT DO UPDATE …
WHERE newer with RETURNING (xmax = 0) to count inserts, and a direct COPY into the table while
batches hold only new keys."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from connectors.warehouse.dialects.base import STAGE_TABLE, Dialect

COPY_CHUNK_ROWS = 65_536


def copy_csv_chunks(data: pa.Table) -> Iterator[memoryview]:
    """CSV for PostgreSQL's COPY, written by Arrow, in bounded chunks.

    Time-zone-aware timestamps are rendered as UTC wall time with an explicit `+00`: Arrow's
    CSV writer formats zoned timestamps value by value through the time-zone database
    (~6 µs a value, most of the batch's CSV time); a cast to naive UTC and then to string
    is vectorized, and the `+00` keeps the value independent of the session's TimeZone.
    bytea's CSV form is hex text; bytes fields are rare, so a Python pass is fine.
    """
    cols = []
    for name in data.column_names:
        col = data.column(name)
        if pa.types.is_timestamp(col.type) and col.type.tz is not None:
            naive = col.cast(pa.timestamp(col.type.unit, tz="UTC")).cast(pa.timestamp(col.type.unit))
            col = pc.binary_join_element_wise(naive.cast(pa.string()), pa.scalar("+00"), "")
        elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            col = pa.array([None if v is None else "\\x" + v.hex() for v in col.to_pylist()], pa.string())
        cols.append(col)
    data = pa.table(cols, names=data.column_names)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    for batch in data.to_batches(max_chunksize=COPY_CHUNK_ROWS):
        buf = io.BytesIO()
        pacsv.write_csv(pa.Table.from_batches([batch]), buf, options)
        yield buf.getbuffer()


class PostgresDialect(Dialect):
    name = "postgresql"

    def __init__(self, sink: Any):
        super().__init__(sink)
        # Try COPY straight into the table (`write_direct`) while batches hold only new keys;
        # a batch that met existing keys turns it off until a batch is all inserts.
        self.try_direct = True

    def stage_table_kwargs(self) -> dict[str, Any]:
        return {"postgresql_on_commit": "DROP"}

    def open_stage(self, conn: Connection, stage: sa.Table) -> None:
        stage.create(conn)  # ON COMMIT DROP: no leftover from an earlier transaction

    def load_stage(self, conn: Connection, stage: sa.Table, data: pa.Table) -> None:
        self.copy(conn, STAGE_TABLE, data)

    def close_stage(self, conn: Connection) -> None:
        # ON COMMIT DROP covers the usual one write per transaction; a change-data-capture batch
        # with unchanged TOAST columns writes once per column set in the same transaction.
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{STAGE_TABLE}")

    def copy(self, conn: Connection, table: str, data: pa.Table) -> None:
        """COPY … FROM STDIN (CSV) with the CSV written by Arrow (`copy_csv_chunks`)."""
        raw = conn.connection.driver_connection
        preparer = conn.engine.dialect.identifier_preparer
        columns = ", ".join(preparer.quote(c) for c in data.column_names)
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
            for chunk in copy_csv_chunks(data):
                copy.write(chunk)

    def write_direct(self, conn: Connection, rows: pa.Table) -> bool:
        """COPY the batch straight into the table when none of its keys is there yet.

        Tried inside a savepoint: the primary key rejects the COPY at the first key that
        exists (a row, or a row another transaction is inserting — the COPY waits for it),
        and the savepoint undoes it; the caller then takes the staging path. When it
        succeeds every record was a new key: no row to be newer than, so no version guard
        applies and all are inserted. Only for tables without tombstones (`deletes` off):
        a remembered tombstone must be able to block an older record.
        """
        import psycopg

        sink = self.sink
        if not self.try_direct or sink.tombstones is not None:
            return False
        if "_deleted" in rows.column_names and pc.any(rows.column("_deleted")).as_py():
            return False
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute("SAVEPOINT flowsuite_direct")
            try:
                self.copy(conn, conn.engine.dialect.identifier_preparer.quote(sink.table_name),
                          rows.select([c.name for c in sink.table.columns]))
            except psycopg.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT flowsuite_direct")
                cur.execute("RELEASE SAVEPOINT flowsuite_direct")
                self.try_direct = False
                return False
            cur.execute("RELEASE SAVEPOINT flowsuite_direct")
        return True

    def _insert(self, target: sa.Table, names: list[str], sel, order: list[str]):
        ins = pg_insert(target).from_select(names, sel)
        return ins.on_conflict_do_update(
            index_elements=list(self.sink.spec.key),
            set_={c: ins.excluded[c] for c in order},
            where=self.sink.newer(ins.excluded, target.c),
        )

    def upsert_select(self, conn: Connection, target: sa.Table, names: list[str], sel, order: list[str]) -> None:
        conn.execute(self._insert(target, names, sel, order))

    def upsert_records(self, conn: Connection, stage: sa.Table, sel, names: list[str], n_records: int,
                       counts: Any) -> None:
        ins = self._insert(self.sink.table, names, sel, self.sink.update_order(names))
        up = ins.returning(sa.literal_column("(xmax = 0)").label("inserted")).cte("up")
        inserted, changed = conn.execute(
            sa.select(sa.func.count().filter(up.c.inserted), sa.func.count()).select_from(up)
        ).one()
        inserted, changed = int(inserted), int(changed)
        self.try_direct = inserted == n_records  # all new keys: the next batch may be too
        counts.inserted += inserted
        counts.updated += changed - inserted
        counts.skipped_stale += n_records - changed
