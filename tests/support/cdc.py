"""Shared pieces of the change-data-capture tests (tests/conftest.py exposes the fixtures): a throwaway PostgreSQL cluster with
wal_level=logical (orchestration/services/pg_cluster.py) for the session, a fresh database per test,
the `orders` product and source declarations, and a reader of the topic's events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from connectors.sources.cdc.spec import CdcSourceSpec
from connectors.spec import DataProductSpec
from orchestration.services.pg_cluster import ClusterError, PgCluster, find_bin_dir
from tests.support import read_messages
from tests.support.services import unavailable

REPO = Path(__file__).resolve().parents[2]

ORDERS_DDL = """
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer text NOT NULL,
    amount numeric(12, 4),
    status text,
    placed_at timestamptz,
    note text,
    attrs jsonb,
    blob bytea,
    tags text[]
)
"""


@pytest.fixture(scope="session")
def pg_logical() -> Iterator[PgCluster]:
    """A PostgreSQL cluster with wal_level=logical for the whole session."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        unavailable("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin")
    cluster = PgCluster(bin_dir)
    try:
        cluster.start()
    except ClusterError as exc:
        unavailable(f"cannot start a throwaway PostgreSQL cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cdc_db(pg_logical: PgCluster) -> Iterator[str]:
    """A fresh database in the logical cluster, with its slots dropped at the end."""
    name = f"cdc_{uuid.uuid4().hex[:10]}"
    sql_autocommit(pg_logical.url, f"CREATE DATABASE {name}")
    try:
        yield pg_logical.database_url(name)
    finally:  # a new connection: the test may have restarted the server
        sql_autocommit(pg_logical.url,
                       "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                       f"WHERE database = '{name}' AND active_pid IS NOT NULL",
                       f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{name}'",
                       f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sql_autocommit(url: str, *statements: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
    finally:
        conn.close()


def sql(url: str, *statements: str, args: tuple | None = None) -> list:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            out = []
            for s in statements:
                cur.execute(s, args)
                out = cur.fetchall() if cur.description else out
            return out
    finally:
        conn.close()


def slot_streaming(url: str, slot: str = "flowsuite_shop_orders") -> bool:
    """The capture is connected and streaming from its slot (what a test waits for, not a sleep)."""
    rows = sql(url, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", args=(slot,))
    return bool(rows and rows[0][0])


def slot_caught_up(url: str, slot: str = "flowsuite_shop_orders") -> bool:
    """Streaming, and every change committed so far confirmed by the capture."""
    rows = sql(url, "SELECT active, confirmed_flush_lsn >= pg_current_wal_insert_lsn() "
                    "FROM pg_replication_slots WHERE slot_name = %s", args=(slot,))
    return bool(rows and rows[0][0] and rows[0][1])


def orders_product(topic: str, **changes) -> DataProductSpec:
    data = {
        "name": "orders", "owner": "team:shop", "topic": topic, "format": "cloudevents", "key": "id",
        "fields": [
            {"name": "id", "type": "int64", "required": True},
            {"name": "customer", "type": "string", "required": True},
            {"name": "amount", "type": "string"},
            {"name": "status", "type": "string"},
            {"name": "placed_at", "type": "timestamp"},
            {"name": "note", "type": "string"},
            {"name": "attrs", "type": "string"},
            {"name": "blob", "type": "bytes"},
            {"name": "tags", "type": "string"},
        ],
        "event_time": {"source": "ce_time", "fallback": "kafka_timestamp"},
        "partitioning": {"start": "2020-01-01T00:00:00Z"},
        "cloudevents": {"dedupe_on_id": True, "data_layout": "debezium"},
        "sinks": {"database": {"table": "orders", "deletes": "tombstone"}},
    }
    data.update(changes)
    return DataProductSpec.model_validate(data)


def orders_source(url: str, **changes) -> CdcSourceSpec:
    data = {"name": "shop_orders", "product": "orders", "mode": "cdc", "connection": {"url": url},
            "table": "orders", "idle_feedback": "1s", "max_batch_changes": 500}
    data.update(changes)
    return CdcSourceSpec.model_validate(data)


def read_events(bootstrap: str, topic: str, partitions: int = 1) -> list[dict]:
    """Every record of the topic in offset order: key, headers, parsed value (None: tombstone)."""
    out = []
    for m in read_messages(bootstrap, topic, partitions):
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        out.append({"key": m.key().decode() if m.key() is not None else None, "headers": headers,
                    "data": json.loads(m.value()) if m.value() is not None else None,
                    "offset": m.offset()})
    return out
