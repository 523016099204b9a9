"""MariaDB/MySQL: ON DUPLICATE KEY UPDATE with every column guarded by the version comparison
(MySQL assigns left to right, so the version columns come last), a TEMPORARY stage dropped
with `DROP TEMPORARY TABLE` (a plain DROP TABLE would commit implicitly)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.engine import Connection

from connectors.warehouse.dialects.base import Dialect


class MySQLDialect(Dialect):
    name = "mysql"
    drop_stage = "DROP TEMPORARY TABLE"

    def upsert_select(self, conn: Connection, target: sa.Table, names: list[str], sel, order: list[str]) -> None:
        ins = mysql_insert(target).from_select(names, sel)
        guard = self.sink.newer(ins.inserted, target.c)
        ins = ins.on_duplicate_key_update([(c, sa.case((guard, ins.inserted[c]), else_=target.c[c])) for c in order])
        conn.execute(ins)
