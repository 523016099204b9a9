"""Engines, schema locks and retries shared by every table owner (metastore, warehouse, sources)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence

from sqlalchemy import MetaData, Table, create_engine, event, insert, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from connectors.errors import TransientError

log = logging.getLogger(__name__)

SCHEMA_LOCK_WAIT_S = 60  # MySQL's GET_LOCK: how long to wait for another process's schema change


class SchemaLockTimeoutError(TransientError, TimeoutError):
    """Another process held a schema lock past SCHEMA_LOCK_WAIT_S: it is still changing these
    tables, so the same attempt may succeed once it is done."""


def _enter_wal(cursor, deadline_s: float = 60.0) -> None:
    """Switch a SQLite database to WAL, waiting out other connections that hold it.

    Entering WAL needs an exclusive lock, and SQLite answers "database is locked" at once,
    without its busy handler, when another connection is mid-transaction on the same file —
    which is exactly what happens when several sensors or steps open a fresh metastore
    together. So the switch is retried with a growing pause until `deadline_s` has passed.
    """
    deadline = time.monotonic() + deadline_s
    pause = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def make_engine(url: str) -> Engine:
    """An engine whose write transactions serialize correctly across processes."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, poolclass=None)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # pragma: no cover - driver hook
            dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below take effect
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=60000")
            _enter_wal(cur)
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - driver hook
            # IMMEDIATE takes the write lock up front, so two writers never deadlock on upgrade.
            # A connection from `reading` only reads: a deferred BEGIN, which in WAL mode neither
            # takes the write lock nor waits for a writer's commit (its fsync).
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


READ_ONLY = "flowsuite_read_only"  # the execution option `reading` sets


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads only. On SQLite its transaction is deferred, so a read never
    queues behind the write lock the other connections take up front (BEGIN IMMEDIATE);
    elsewhere it is an ordinary connection. A write through it fails on SQLite's upgrade rules
    under contention, so do not write through it."""
    with engine.connect() as conn:
        yield conn.execution_options(**{READ_ONLY: True})


@contextlib.contextmanager
def schema_lock(conn: Connection, name: str) -> Iterator[None]:
    """Inside a transaction: hold the database's lock `name` for schema changes until it ends.

    Steps and sensors that first meet a fresh database at once would otherwise race on
    CREATE TABLE, which PostgreSQL answers with a unique violation of pg_type, not a wait.
    SQLite needs nothing: every transaction here starts with BEGIN IMMEDIATE, its write lock.
    Name the lock after what it creates, so unrelated tables never wait for each other.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})
    elif dialect in ("mysql", "mariadb"):
        got = conn.execute(text("SELECT GET_LOCK(:name, :wait)"), {"name": name, "wait": SCHEMA_LOCK_WAIT_S}).scalar()
        if got != 1:
            raise SchemaLockTimeoutError(
                f"waited {SCHEMA_LOCK_WAIT_S} s for the schema lock {name!r}: another process is "
                "changing these tables"
            )
    try:
        yield
    finally:
        if dialect in ("mysql", "mariadb"):  # a session lock: MySQL's DDL commits on its own
            try:
                conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
            except Exception:  # the lock goes with the session; keep the first error
                log.warning("releasing the schema lock %r failed", name, exc_info=True)


def create_missing_tables(engine: Engine, md: MetaData, lock_name: str, tables: Sequence[Table] | None = None) -> None:
    """CREATE the tables of `md` (or `tables`) that do not exist yet, under `schema_lock`;
    one inspection and no lock when they all exist (the common case: every sensor tick)."""
    wanted = list(tables) if tables is not None else list(md.sorted_tables)
    inspector = inspect(engine)
    if all(inspector.has_table(t.name) for t in wanted):
        return
    with engine.begin() as conn, schema_lock(conn, lock_name):
        md.create_all(conn, tables=wanted)


def insert_ignore(conn: Connection, table: Table, values: dict) -> None:
    """INSERT that does nothing when the primary key exists, on every supported dialect."""
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(table).values(**values).on_conflict_do_nothing())
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing())
    elif name in ("mysql", "mariadb"):
        conn.execute(insert(table).values(**values).prefix_with("IGNORE"))
    else:  # pragma: no cover
        try:
            with conn.begin_nested():
                conn.execute(insert(table).values(**values))
        except IntegrityError:
            pass


def retrying(fn: Callable[[], object], attempts: int = 5) -> object:
    """Retry a whole transaction on transient lock/serialization errors."""
    for attempt in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            text = str(exc).lower()
            if attempt + 1 == attempts or not any(s in text for s in ("locked", "deadlock", "could not serialize")):
                raise
            time.sleep(0.05 * (2**attempt))
    return None  # pragma: no cover
