"""SQLite: INSERT … SELECT … ON CONFLICT DO UPDATE … WHERE newer (the select has a WHERE, so
SQLite's ON-clause ambiguity does not arise)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from connectors.warehouse.dialects.base import Dialect


class SQLiteDialect(Dialect):
    name = "sqlite"

    def upsert_select(self, conn: Connection, target: sa.Table, names: list[str], sel, order: list[str]) -> None:
        ins = sqlite_insert(target).from_select(names, sel)
        ins = ins.on_conflict_do_update(
            index_elements=list(self.sink.spec.key),
            set_={c: ins.excluded[c] for c in order},
            where=self.sink.newer(ins.excluded, target.c),
        )
        conn.execute(ins)
