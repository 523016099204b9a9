"""The initial snapshot: the table's existing rows, read under the slot's exported snapshot.

The slot is created with `EXPORT_SNAPSHOT`; a second connection imports it (`SET TRANSACTION
SNAPSHOT`, REPEATABLE READ, read only) and reads the rows as `op: r` events. The stream then
starts at the slot's consistent point, so a row written while the snapshot runs is in the
stream and not in the snapshot: it arrives once.

A snapshot interrupted by a crash is read again in full on restart, from the same slot (which
has not moved: nothing was confirmed), under a fresh REPEATABLE READ snapshot; rows keep their
id `<slot>:<consistent lsn>:r:<key>`, so rows that landed before the crash are dropped by
landing's de-duplication, and the changes the new snapshot already saw are streamed again
after it (full row images, applied in order: the warehouse ends equal to the table).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from connectors.sources.cdc.events import EventBuilder, TxnContext
from connectors.sources.cdc.pgoutput import Column, Relation
from connectors.sources.cdc.server import connect, primary_key, table_columns
from connectors.sources.cdc.spec import CdcSourceSpec
from connectors.sources.cdc.types import to_json_value

log = logging.getLogger(__name__)


def table_relation(conn, source: CdcSourceSpec) -> Relation:
    """The table as a pgoutput Relation (from the catalog), for building snapshot events."""
    key = set(primary_key(conn, source))
    cols = tuple(Column(name, oid, -1, name in key) for name, oid in table_columns(conn, source))
    return Relation(0, source.table_schema, source.table, "d", cols)


def read_snapshot(
    url: str,
    source: CdcSourceSpec,
    builder: EventBuilder,
    *,
    slot: str,
    snapshot_lsn: int,
    snapshot_name: str | None,
    emit: Callable[[tuple], None],
) -> tuple[int, dict[str, int]]:
    """Emit one `r` event per row; returns (rows, {column: type OID})."""
    conn = connect(url, autocommit=False)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            if snapshot_name:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
            else:
                cur.execute("SELECT 1")  # opens the REPEATABLE READ transaction: its snapshot is taken now
            cur.execute("SELECT now()")
            (started,) = cur.fetchone()
        rel = table_relation(conn, source)
        ctx = TxnContext(slot, snapshot_lsn, started.astimezone(UTC) if started else datetime.now(UTC), None, True)
        select = ", ".join(f'"{c.name}"::text' for c in rel.columns)
        rows = 0
        with conn.cursor(name="flowsuite_cdc_snapshot") as cur:
            cur.itersize = source.max_batch_changes
            cur.execute(f'SELECT {select} FROM "{source.table_schema}"."{source.table}"')
            for values in cur:
                row = {c.name: to_json_value(v, c.type_oid) for c, v in zip(rel.columns, values, strict=True)}
                emit(builder.snapshot_row(rel, row, ctx))
                rows += 1
        conn.rollback()
        return rows, {c.name: c.type_oid for c in rel.columns}
    finally:
        conn.close()
