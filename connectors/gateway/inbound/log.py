"""The webhook-ids an inbound product already answered, in the metastore's database.

Table `fs_inbound_deliveries`: one row per (product, sending organisation, webhook-id), written
only after the broker acknowledged the request's records, with the status and answer it got.
A retry of the same webhook-id (Standard Webhooks: the idempotency key, the same on every
attempt) gets that answer again and produces nothing. Rows older than the product's
`inbound.remember` are pruned as new ones come. Concurrent requests' rows are committed together
(`record`: group commit), so the log's durable commit is paid once per group, not per request.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    select,
)

from connectors.metastore import Metastore, create_missing_tables, insert_ignore, reading, retrying

md = MetaData()

deliveries = Table(
    "fs_inbound_deliveries",
    md,
    Column("product", String(128), primary_key=True),
    Column("org", String(128), primary_key=True),
    Column("webhook_id", String(255), primary_key=True),
    Column("received_at", Double, nullable=False, index=True),
    Column("status", Integer, nullable=False),
    Column("events", BigInteger, nullable=False),  # produced to the topic
    Column("answer", Text, nullable=False),  # the JSON answer (no secrets: ids, counts, reasons)
)

PRUNE_EVERY = 500  # inserts between two prunes


@dataclass(frozen=True)
class Delivery:
    status: int
    answer: dict[str, Any]
    received_at: float


class _Group:
    """Rows committed together, and how that commit went."""

    __slots__ = ("done", "error", "rows")

    def __init__(self):
        self.rows: list[tuple[dict[str, Any], float]] = []
        self.done = False
        self.error: BaseException | None = None


class DeliveryLog:
    def __init__(self, metastore: Metastore):
        self.engine = metastore.engine
        create_missing_tables(self.engine, md, "flowsuite.inbound")
        self._inserts = 0
        self._changed = threading.Condition()
        self._open = _Group()  # rows waiting for the next commit
        self._writing = False
        self.commits = 0  # transactions written (the tests, the bench)

    def get(self, product: str, org: str, webhook_id: str) -> Delivery | None:
        with reading(self.engine) as conn:  # a read: it does not wait for the group commit's fsync
            row = conn.execute(select(deliveries.c.status, deliveries.c.answer, deliveries.c.received_at).where(and_(
                deliveries.c.product == product, deliveries.c.org == org, deliveries.c.webhook_id == webhook_id,
            ))).first()
        return None if row is None else Delivery(row.status, json.loads(row.answer), row.received_at)

    def record(self, product: str, org: str, webhook_id: str, status: int, events: int, answer: dict[str, Any],
               remember_s: float) -> None:
        """Write the answer under its webhook-id and return once it is committed. Requests that
        record at the same time share one transaction (group commit): one of them writes every
        row waiting, the others wait for that commit — so N concurrent requests pay one durable
        commit (a SQLite fsync), not N one after the other."""
        now = time.time()
        row = {"product": product, "org": org, "webhook_id": webhook_id, "received_at": now, "status": status,
               "events": events, "answer": json.dumps(answer, separators=(",", ":"))}
        with self._changed:
            mine = self._open
            mine.rows.append((row, remember_s))
            while not mine.done:
                if not self._writing:  # this request writes the group, its own row in it
                    self._writing = True
                    self._open = _Group()
                    break
                self._changed.wait()
            else:
                if mine.error is not None:
                    raise mine.error
                return
        try:
            retrying(lambda: self._write(mine.rows))
        except Exception as exc:
            mine.error = exc
            raise
        finally:
            with self._changed:
                mine.done, self._writing = True, False
                self._changed.notify_all()

    def _write(self, rows: list[tuple[dict[str, Any], float]]) -> None:
        with self.engine.begin() as conn:
            for values, _ in rows:
                insert_ignore(conn, deliveries, values)
            before, self._inserts = self._inserts, self._inserts + len(rows)
            if before // PRUNE_EVERY != self._inserts // PRUNE_EVERY or before == 0:
                for values, remember_s in {(v["product"], r): (v, r) for v, r in rows}.values():
                    conn.execute(delete(deliveries).where(and_(
                        deliveries.c.product == values["product"], deliveries.c.received_at < values["received_at"] - remember_s)))
        self.commits += 1

    def totals(self, product: str) -> dict[str, int]:
        """Requests answered and events produced per sending organisation (the demo, the tests)."""
        from sqlalchemy import func

        with reading(self.engine) as conn:
            rows = conn.execute(select(deliveries.c.org, func.count(), func.coalesce(func.sum(deliveries.c.events), 0))
                                .where(deliveries.c.product == product).group_by(deliveries.c.org)).all()
        return {org: int(events) for org, _, events in rows}
