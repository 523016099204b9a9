"""Where capture stands, in the metastore (`fs_cdc_positions`, one row per source).

`commit_lsn` is the commit LSN of the last transaction whose events the broker acknowledged
in full; it is written before the server is told (send_feedback) that it may forget that
transaction, so a restart resumes from it and skips what is at or below it. `snapshot_lsn`
is the slot's consistent point; `snapshot_done` says the snapshot was published in full.
`columns` keeps each captured column's type OID, to stop on a changed type.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from connectors.metastore import Metastore, create_missing_tables

_md = sa.MetaData()
positions = sa.Table(
    "fs_cdc_positions",
    _md,
    sa.Column("source", sa.String(128), primary_key=True),
    sa.Column("slot", sa.String(64), nullable=False),
    sa.Column("snapshot_lsn", sa.BigInteger),
    sa.Column("snapshot_done", sa.Boolean, nullable=False),
    sa.Column("commit_lsn", sa.BigInteger),
    sa.Column("end_lsn", sa.BigInteger),
    sa.Column("events_published", sa.BigInteger, nullable=False),
    sa.Column("columns", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


@dataclass
class Position:
    source: str
    slot: str
    snapshot_lsn: int | None = None
    snapshot_done: bool = False
    commit_lsn: int | None = None
    end_lsn: int | None = None
    events_published: int = 0
    columns: dict[str, int] = field(default_factory=dict)
    updated_at: float = 0.0
    stored: bool = False


def read_position(metastore: Metastore, source: str, slot: str) -> Position:
    create_missing_tables(metastore.engine, _md, "flowsuite.cdc_positions")
    with metastore.engine.connect() as conn:
        r = conn.execute(sa.select(positions).where(positions.c.source == source)).mappings().first()
    if r is None:
        return Position(source, slot)
    return Position(source, r["slot"], r["snapshot_lsn"], bool(r["snapshot_done"]), r["commit_lsn"], r["end_lsn"],
                    r["events_published"], json.loads(r["columns"]), r["updated_at"], True)


def store_position(metastore: Metastore, p: Position) -> None:
    p.updated_at = time.time()
    values = dict(slot=p.slot, snapshot_lsn=p.snapshot_lsn, snapshot_done=p.snapshot_done, commit_lsn=p.commit_lsn,
                  end_lsn=p.end_lsn, events_published=p.events_published,
                  columns=json.dumps(p.columns, sort_keys=True), updated_at=p.updated_at)
    with metastore.engine.begin() as conn:
        if conn.execute(sa.update(positions).where(positions.c.source == p.source).values(**values)).rowcount != 1:
            conn.execute(sa.insert(positions).values(source=p.source, **values))
    p.stored = True


def forget_position(metastore: Metastore, source: str) -> None:
    create_missing_tables(metastore.engine, _md, "flowsuite.cdc_positions")
    with metastore.engine.begin() as conn:
        conn.execute(sa.delete(positions).where(positions.c.source == source))
