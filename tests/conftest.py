"""Fixtures the whole suite shares: a real broker, fresh topics, real databases, a temp home.

- `kafka_bootstrap` (session): `FLOWSUITE_TEST_KAFKA` when set (a real Kafka or Redpanda),
  else an embedded Tansu broker on a free port, stopped when the session ends.
- `topic` / `make_topic`: a fresh, uniquely named topic (2 partitions unless asked).
- `pg_url` / `mariadb_url` (session): a throwaway database on the machine's server, dropped at
  the end. An unreachable server skips the test with the reason, except under `CI=true`,
  where it fails: CI must not pass by skipping.
- `sqlite_url`: a SQLite file in the test's tmp_path.
- `flowsuite_home`: FLOWSUITE_HOME (and the URLs derived from it) pointed at a temp folder.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connectors.kafka import ensure_topic
from orchestration.services.broker import running_broker

# Change data capture: a throwaway PostgreSQL with wal_level=logical and a database per test.
from tests.support.cdc import cdc_db, pg_logical  # noqa: F401 - fixtures
from tests.support.services import MARIADB_HOST, MARIADB_PORT, PG_HOST, PG_PORT, unavailable

# --- Kafka ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the broker the tests use."""
    external = os.environ.get("FLOWSUITE_TEST_KAFKA")
    if external:
        yield external
        return
    with running_broker() as broker:
        assert broker.bootstrap is not None
        yield broker.bootstrap


@pytest.fixture
def make_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory: `make_topic(partitions=2)` creates a new topic and returns its name."""

    def create(partitions: int = 2) -> str:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", request.node.name)[:60]
        name = f"test.{base}.{uuid.uuid4().hex[:8]}"
        ensure_topic(kafka_bootstrap, name, partitions)
        return name

    return create


@pytest.fixture
def topic(make_topic: Callable[..., str]) -> str:
    """A fresh topic with 2 partitions."""
    return make_topic(partitions=2)


# --- databases -----------------------------------------------------------------------------


def _db_name() -> str:
    return f"flowsuite_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database (trust auth, user postgres)."""
    import psycopg

    name = _db_name()
    try:
        admin = psycopg.connect(
            host=PG_HOST,
            port=PG_PORT,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=3,
        )
    except psycopg.Error as exc:
        unavailable(
            f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}: {' '.join(str(exc).split())}"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(
            host=PG_HOST,
            port=PG_PORT,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=3,
        ) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_fresh_url(pg_url: str) -> Iterator[str]:
    """A database of its own for one test: a metastore keyed by product must not inherit
    another test's committed offsets of the same product name (the session's `pg_url` is shared)."""
    import psycopg

    name = _db_name()
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh MariaDB database (root, empty password)."""
    import pymysql

    name = _db_name()

    def connect() -> pymysql.connections.Connection:
        return pymysql.connect(
            host=MARIADB_HOST,
            port=MARIADB_PORT,
            user="root",
            password="",
            connect_timeout=3,
            autocommit=True,
        )

    try:
        admin = connect()
    except pymysql.MySQLError as exc:
        unavailable(f"MariaDB not reachable at {MARIADB_HOST}:{MARIADB_PORT}: {exc}")
    with admin, admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{name}"
    finally:
        with connect() as admin, admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


# --- settings ------------------------------------------------------------------------------


@pytest.fixture
def flowsuite_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp FLOWSUITE_HOME; lake, metastore, warehouse and Dagster home follow it."""
    home = tmp_path / "flowsuite_home"
    (home / "dagster").mkdir(parents=True)
    monkeypatch.setenv("FLOWSUITE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    for derived in ("FLOWSUITE_LAKE_URL", "FLOWSUITE_METASTORE_URL", "FLOWSUITE_WAREHOUSE_URL"):
        monkeypatch.delenv(derived, raising=False)
    return home


# --- the lake: local disk or S3 (moto) -----------------------------------------------------


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 (moto's ThreadedMotoServer on a free port) with the bucket `flowsuite-test`."""
    from tests.support.s3 import start_s3_server

    server = start_s3_server()
    try:
        yield server
    finally:
        server.server.stop()


@pytest.fixture
def s3_lake_url(s3_server, monkeypatch: pytest.MonkeyPatch) -> str:
    """`s3://flowsuite-test/<fresh prefix>`, with the endpoint and credentials in the
    environment (FLOWSUITE_S3_ENDPOINT, AWS_*), where `Lake(url)` and subprocesses read them."""
    for var, value in s3_server.env().items():
        monkeypatch.setenv(var, value)
    return f"s3://{s3_server.bucket}/lake-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "s3"])
def lake_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The lake of a test, once on local disk and once on S3 (see `s3_lake_url`)."""
    if request.param == "local":
        return str(tmp_path / "lake")
    return request.getfixturevalue("s3_lake_url")

