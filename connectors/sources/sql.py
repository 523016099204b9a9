# Over 400 lines: a source connector's spec, cursor table and publish loop are one exactly-once protocol.
"""Query-based source connector: publishes the rows of a legacy SQL table to a topic.

The role of Kafka Connect's JDBC source, for any SQLAlchemy URL. Each run selects the rows
past a durable cursor, publishes them as binary-mode CloudEvents (connectors/formats/cloudevents.py)
with an idempotent producer, waits until the broker acknowledged every one of them, and only
then advances the cursor — one step per `batch_rows` rows. A crash before the cursor moved
re-publishes those rows on the next run with the same deterministic `ce_id`
(`<table>:<key>:<version>`), which the product de-duplicates on: no gap, no duplicate.

Modes (what each can and cannot see — docs/flow.md has the table):

- `incrementing`: rows whose incrementing column is above the cursor, in its order. Sees
  inserts only: **not updates, not deletes**, and not a row whose id is below the cursor
  when it commits (an id allocated before and committed after a higher one). The version
  in `ce_id` is the id.
- `timestamp`: rows with cursor < timestamp < now − delay, in timestamp order. Sees inserts
  and updates that set the timestamp column; **not deletes**, not an update that leaves the
  timestamp alone, and not a row committed with a timestamp at or below the cursor — which
  the delay prevents for transactions shorter than the delay. A batch never ends in the
  middle of a timestamp, but a row committed *later* with exactly the last published
  timestamp is missed (use timestamp+incrementing).
- `timestamp+incrementing`: (timestamp, id) > cursor, timestamp < now − delay, ordered by
  both. Like `timestamp`, and rows sharing a timestamp are never missed. Not deletes.

`timestamp_delay` holds back rows whose timestamp is too recent: a transaction that started
before a published row but commits after it has a smaller timestamp, and is still picked up
as long as it commits within the delay. `now` is this machine's UTC clock: the delay must
also cover the skew to the source database's clock.

The cursor is stored in the **metastore** (`fs_source_cursors`, one row per connector), not in
the source database, which is often read-only to us; it moves by compare-and-set, and a
claim with a lease (the metastore's `claims`) keeps two runs of one connector from
publishing at the same time.

Declared in YAML under `dataproducts/sources/` (`load_sources`), next to the data product
it feeds. Dagster-free; `assets/sources.py` runs it as an asset.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import sqlalchemy as sa
import yaml
from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from connectors.errors import TransientError
from connectors.faults import crash_point
from connectors.flows.context import RunContext
from connectors.formats import binary_headers, cloudevent_id, json_default, rfc3339
from connectors.kafka import ensure_topic
from connectors.metastore import Metastore, create_missing_tables
from connectors.sources.cdc.spec import CdcSourceSpec
from connectors.sources.common import (
    SourceSpecModel,
    idempotent_producer,
    resolve_connection_url,
    send,
    sql_name,
)
from connectors.spec import (
    DataProductSpec,
    SpecError,
    SpecModel,
    SpecProblem,
    parse_duration,
    problems_from_validation,
)

log = logging.getLogger(__name__)

Mode = Literal["incrementing", "timestamp", "timestamp+incrementing"]
CURSOR_TABLE = "fs_source_cursors"
CLAIM_PRODUCT = "source:{name}"
CLAIM_RESOURCE = "publish"


# --- the declaration ----------------------------------------------------------------------------


class SourceConnectionSpec(SpecModel):
    url: str = Field(description="SQLAlchemy URL; ${VAR} and ${VAR:-default} come from the environment")


class SourceCloudEventsSpec(SpecModel):
    source: str | None = None  # ce_source; default /flowsuite/sources/<name>
    type: str | None = None  # ce_type; default flowsuite.source.<table>.row


class SourceSpec(SourceSpecModel):
    """One query-based source connector: a table, how to find new rows, and the product it feeds."""

    name: str
    product: str
    owner: str | None = None
    description: str = ""
    connection: SourceConnectionSpec
    table: str
    table_schema: str | None = Field(default=None, alias="schema")
    key: list[str]
    mode: Mode
    incrementing_column: str | None = None
    timestamp_column: str | None = None
    timestamp_delay: timedelta = timedelta(seconds=5)
    batch_rows: int = Field(default=1000, ge=1)
    poll_interval: timedelta = timedelta(seconds=30)
    cloudevents: SourceCloudEventsSpec = SourceCloudEventsSpec()

    @field_validator("table", "incrementing_column", "timestamp_column")
    @classmethod
    def _sql_name(cls, v: str | None) -> str | None:
        return sql_name(v)

    @field_validator("timestamp_delay", "poll_interval", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)

    @model_validator(mode="after")
    def _mode_columns(self) -> SourceSpec:
        if not self.key:
            raise ValueError("key must name the column(s) that identify a row")
        if self.mode in ("incrementing", "timestamp+incrementing") and not self.incrementing_column:
            raise ValueError(f"mode {self.mode!r} needs incrementing_column")
        if self.mode in ("timestamp", "timestamp+incrementing") and not self.timestamp_column:
            raise ValueError(f"mode {self.mode!r} needs timestamp_column")
        return self

    @property
    def ce_source(self) -> str:
        return self.cloudevents.source or f"/flowsuite/sources/{self.name}"

    @property
    def ce_type(self) -> str:
        return self.cloudevents.type or f"flowsuite.source.{self.table}.row"

    def resolved_url(self, env: Mapping[str, str] | None = None) -> str:
        """The connection URL with ${VAR} / ${VAR:-default} filled in (FLOWSUITE_HOME defaults
        to the settings' home); an unset variable raises UnsetVariableError (terminal)."""
        return resolve_connection_url(self.connection.url, env, f"the connection URL of source {self.name}")


class SourceError(TransientError, RuntimeError):
    """The connector could not publish; the cursor did not move past anything unacknowledged."""


# A declaration under dataproducts/sources/ is one of these, told apart by `mode`: the
# query-based modes (SourceSpec) or `cdc` (change data capture, connectors/sources/cdc).
SourceDeclaration = Annotated[SourceSpec | CdcSourceSpec, Field(discriminator="mode")]
SOURCE_DECLARATION: TypeAdapter[SourceSpec | CdcSourceSpec] = TypeAdapter(SourceDeclaration)
SOURCE_MODES = (*get_args(Mode), "cdc")


def parse_source_file(path: Path) -> SourceSpec | CdcSourceSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError([SpecProblem(path, "", f"cannot read the source declaration: {exc}")]) from None
    if not isinstance(data, dict):
        raise SpecError([SpecProblem(path, "", "expected a mapping of settings")])
    try:
        spec = SOURCE_DECLARATION.validate_python(data)
    except ValidationError as exc:
        raise SpecError(problems_from_validation(path, exc, data, "mode", SOURCE_MODES)) from None
    if path.stem != spec.name and path.stem != spec.product:
        raise SpecError([SpecProblem(path, "name", f"the file name {path.stem!r} must be the connector's name or its product's")])
    return spec


def load_sources(products_dir: Path, products: list[DataProductSpec] | None = None) -> list[SourceSpec | CdcSourceSpec]:
    """Every declaration in `<products_dir>/sources/*.yaml`; checked against the products."""
    folder = products_dir / "sources"
    if not folder.is_dir():
        return []
    parsed: list[tuple[SourceSpec | CdcSourceSpec, Path]] = []
    problems: list[SpecProblem] = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            parsed.append((parse_source_file(path), path))
        except SpecError as exc:
            problems.extend(exc.problems)
    by_name = {p.name: p for p in products or []}
    for spec, path in parsed:
        product = by_name.get(spec.product)
        if products is not None and product is None:
            problems.append(SpecProblem(path, "product", f"no data product {spec.product!r} in {products_dir}"))
        elif product is not None:
            if product.format != "cloudevents":
                problems.append(SpecProblem(path, "product", f"{spec.product!r} must have format: cloudevents"))
            missing = [k for k in spec.key if product.field(k) is None]
            if missing:
                problems.append(SpecProblem(path, "key", f"key column(s) {missing} are not fields of {spec.product!r}"))
            if spec.mode == "cdc" and product.cloudevents.data_layout != "debezium":
                problems.append(SpecProblem(path, "product", f"{spec.product!r} must set cloudevents.data_layout: debezium "
                                                             "to land change events"))
    if problems:
        raise SpecError(problems)
    return sorted((s for s, _ in parsed), key=lambda s: s.name)


# --- the cursor ---------------------------------------------------------------------------------

_cursor_md = sa.MetaData()
cursors = sa.Table(
    CURSOR_TABLE,
    _cursor_md,
    sa.Column("source", sa.String(128), primary_key=True),
    sa.Column("table_name", sa.String(128), nullable=False),
    sa.Column("mode", sa.String(32), nullable=False),
    sa.Column("last_timestamp", sa.String(40)),  # RFC 3339 UTC, microseconds
    sa.Column("last_incrementing", sa.BigInteger),
    sa.Column("generation", sa.BigInteger, nullable=False),  # compare-and-set token
    sa.Column("rows_published", sa.BigInteger, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class Cursor:
    last_timestamp: datetime | None = None
    last_incrementing: int | None = None
    generation: int = 0
    rows_published: int = 0

    def describe(self) -> str:
        parts = []
        if self.last_timestamp is not None:
            parts.append(f"timestamp {rfc3339(self.last_timestamp)}")
        if self.last_incrementing is not None:
            parts.append(f"id {self.last_incrementing}")
        return ", ".join(parts) or "start of the table"


def _create_cursor_table(metastore: Metastore) -> None:
    create_missing_tables(metastore.engine, _cursor_md, "flowsuite.source_cursors")


def read_cursor(metastore: Metastore, source: str) -> Cursor:
    _create_cursor_table(metastore)
    with metastore.engine.connect() as conn:
        r = conn.execute(sa.select(cursors).where(cursors.c.source == source)).mappings().first()
    if r is None:
        return Cursor()
    ts = datetime.fromisoformat(r["last_timestamp"].replace("Z", "+00:00")) if r["last_timestamp"] else None
    return Cursor(ts, r["last_incrementing"], r["generation"], r["rows_published"])


def _store_cursor(metastore: Metastore, spec: SourceSpec, before: Cursor, after: Cursor, run_id: str) -> None:
    """Advance the cursor by compare-and-set on its generation."""
    values = dict(
        table_name=spec.table, mode=spec.mode,
        last_timestamp=rfc3339(after.last_timestamp) if after.last_timestamp else None,
        last_incrementing=after.last_incrementing, generation=after.generation,
        rows_published=after.rows_published, run_id=run_id, updated_at=time.time(),
    )
    with metastore.engine.begin() as conn:
        if before.generation == 0:
            exists = conn.execute(sa.select(cursors.c.generation).where(cursors.c.source == spec.name)).first()
            if exists is None:
                conn.execute(sa.insert(cursors).values(source=spec.name, **values))
                return
        moved = conn.execute(
            sa.update(cursors)
            .where(sa.and_(cursors.c.source == spec.name, cursors.c.generation == before.generation))
            .values(**values)
        ).rowcount
        if moved != 1:
            raise SourceError(f"{spec.name}: the cursor moved under this run (another publisher?); stopped")


def reset_cursor(metastore: Metastore, source: str) -> None:
    """Forget the cursor: the next run publishes the whole table again (ids stay the same)."""
    _create_cursor_table(metastore)
    with metastore.engine.begin() as conn:
        conn.execute(sa.delete(cursors).where(cursors.c.source == source))


# --- publishing ---------------------------------------------------------------------------------


@dataclass
class PublishResult:
    source: str
    topic: str
    mode: str
    run_id: str
    published: int = 0
    batches: int = 0
    per_partition: dict[int, int] = field(default_factory=dict)
    cursor_before: Cursor = field(default_factory=Cursor)
    cursor_after: Cursor = field(default_factory=Cursor)
    upper_bound: datetime | None = None  # rows with a timestamp at or after this wait
    duration_s: float = 0.0


def _utc(v: datetime) -> datetime:
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


# A source's claim lease: renewed after every batch, and a batch reads a legacy database first.
SOURCE_LEASE_S = 60.0


def publish(
    source: SourceSpec,
    product: DataProductSpec,
    run: RunContext,
    *,
    source_url: str | None = None,
    max_rows: int | None = None,
    topic_partitions: int = 2,
    progress: Callable[[int], None] | None = None,
) -> PublishResult:
    """Publish every row past the cursor (up to `max_rows`), batch by batch; see the module doc.

    `run` carries the metastore (cursor and claim), the broker and its client settings, the run
    id, the claim's lease (SOURCE_LEASE_S is the faces' choice) and the clock deciding which rows
    are older than the source's delay; its lake is not used."""
    started = time.monotonic()
    metastore, bootstrap, kafka_config = run.metastore, run.bootstrap, dict(run.kafka_config)
    run_id, lease_s = run.run_id, run.lease_s
    owner = uuid.uuid4().hex
    claim_product = CLAIM_PRODUCT.format(name=source.name)
    url = source_url or source.resolved_url()  # before the claim: an unset ${VAR} holds nothing
    metastore.claim(claim_product, CLAIM_RESOURCE, owner, run_id, lease_s)  # ClaimHeldError if live
    # A plain engine: reading a legacy database must not take write locks (SQLite IMMEDIATE).
    engine = sa.create_engine(url, pool_pre_ping=True)
    producer = None
    result = PublishResult(source.name, product.topic, source.mode, run_id)
    try:
        table = _reflect(engine, source)
        cursor = read_cursor(metastore, source.name)
        result.cursor_before = result.cursor_after = cursor
        now = _utc(run.now())
        upper = now - source.timestamp_delay if source.timestamp_column and source.mode != "incrementing" else None
        result.upper_bound = upper
        ensure_topic(bootstrap, product.topic, topic_partitions, kafka_config=kafka_config)
        producer, delivery = _producer(bootstrap, kafka_config)
        while max_rows is None or result.published < max_rows:
            limit = source.batch_rows if max_rows is None else min(source.batch_rows, max_rows - result.published)
            rows = _next_rows(engine, table, source, cursor, upper, limit)
            if not rows:
                break
            sent = 0
            for row in rows:
                key, value, headers = _event(source, row)
                send(producer, product.topic, key, value, headers)
                sent += 1
            remaining = producer.flush(60)
            failures, delivered = delivery.take()
            if failures or remaining or sum(delivered.values()) != sent:
                first = f"; first error: {failures[0]}" if failures else ""
                raise SourceError(
                    f"{source.name}: {sent - sum(delivered.values())} of {sent} events to topic {product.topic!r} were not "
                    f"acknowledged ({len(failures)} failed, {remaining} still queued){first}; the cursor stays at "
                    f"{cursor.describe()} and the next run publishes them again (same ce_id)"
                )
            crash_point("source_after_flush")
            last = rows[-1]
            after = Cursor(
                last_timestamp=_utc(last[source.timestamp_column]) if source.timestamp_column and source.mode != "incrementing" else None,
                last_incrementing=int(last[source.incrementing_column]) if source.mode != "timestamp" else None,
                generation=cursor.generation + 1,
                rows_published=cursor.rows_published + sent,
            )
            _store_cursor(metastore, source, cursor, after, run_id)
            cursor = after
            result.cursor_after = cursor
            result.published += sent
            result.batches += 1
            for p, n in delivered.items():
                result.per_partition[p] = result.per_partition.get(p, 0) + n
            if progress is not None:
                progress(result.published)
            metastore.renew(claim_product, CLAIM_RESOURCE, owner, lease_s)
            if len(rows) < limit and source.mode != "timestamp":
                break
        return result
    finally:
        result.duration_s = time.monotonic() - started
        if producer is not None:
            producer.flush(10)
        engine.dispose()
        try:
            metastore.release(claim_product, CLAIM_RESOURCE, owner)
        except Exception:  # the lease expires on its own
            log.warning("releasing the claim of source %s failed", source.name, exc_info=True)


def rows_waiting(source: SourceSpec, metastore: Metastore, *, source_url: str | None = None,
                 now: datetime | None = None) -> bool:
    """Whether at least one row is past the cursor (and older than the delay): one cheap query."""
    engine = sa.create_engine(source_url or source.resolved_url(), pool_pre_ping=True)
    try:
        table = _reflect(engine, source)
        now = _utc(now or datetime.now(UTC))
        upper = now - source.timestamp_delay if source.timestamp_column and source.mode != "incrementing" else None
        return bool(_next_rows(engine, table, source, read_cursor(metastore, source.name), upper, 1))
    finally:
        engine.dispose()


def _reflect(engine: sa.Engine, source: SourceSpec) -> sa.Table:
    try:
        table = sa.Table(source.table, sa.MetaData(), schema=source.table_schema, autoload_with=engine)
    except sa.exc.NoSuchTableError:
        raise SourceError(f"{source.name}: table {source.table!r} does not exist in the source database") from None
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"{source.name}: cannot read the source database: {type(exc).__name__}") from None
    needed = [*source.key, source.incrementing_column, source.timestamp_column]
    missing = [c for c in needed if c and c not in table.c]
    if missing:
        raise SourceError(f"{source.name}: table {source.table!r} has no column(s) {missing}")
    return table


def _bind_ts(column: sa.Column, ts: datetime) -> datetime:
    """A UTC instant as the column wants it: aware for TIMESTAMP WITH TIME ZONE, naive UTC else."""
    aware = getattr(column.type, "timezone", False)
    return ts if aware else ts.astimezone(UTC).replace(tzinfo=None)


def _next_rows(engine: sa.Engine, table: sa.Table, source: SourceSpec, cursor: Cursor,
               upper: datetime | None, limit: int) -> list[dict]:
    inc = table.c[source.incrementing_column] if source.incrementing_column else None
    ts = table.c[source.timestamp_column] if source.timestamp_column else None
    q = sa.select(table)
    if source.mode == "incrementing":
        if cursor.last_incrementing is not None:
            q = q.where(inc > cursor.last_incrementing)
        q = q.order_by(inc)
    else:
        q = q.where(ts < _bind_ts(ts, upper))
        last = cursor.last_timestamp
        if source.mode == "timestamp":
            if last is not None:
                q = q.where(ts > _bind_ts(ts, last))
            q = q.order_by(ts)
        else:
            if last is not None:
                lt = _bind_ts(ts, last)
                if cursor.last_incrementing is not None:
                    q = q.where(sa.or_(ts > lt, sa.and_(ts == lt, inc > cursor.last_incrementing)))
                else:
                    q = q.where(ts > lt)
            q = q.order_by(ts, inc)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q.limit(limit)).mappings()]
        if source.mode == "timestamp" and len(rows) == limit:
            # Never end a batch inside a timestamp: the cursor is `ts > last`.
            edge = rows[-1][source.timestamp_column]
            rows = [r for r in rows if r[source.timestamp_column] != edge]
            if not rows:  # more rows share one timestamp than a batch holds: take them all
                rows = [dict(r) for r in conn.execute(q.where(ts == edge).limit(None)).mappings()]
    return rows


def _event(source: SourceSpec, row: dict) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    key_value: Any = row[source.key[0]] if len(source.key) == 1 else {k: row[k] for k in source.key}
    key_text = key_value if isinstance(key_value, str) else json.dumps(key_value, default=json_default, separators=(",", ":"))
    if source.mode == "incrementing":
        version: Any = row[source.incrementing_column]
    else:
        version = _utc(row[source.timestamp_column])
    ts = row.get(source.timestamp_column) if source.timestamp_column else None
    value = json.dumps(
        {k: (_utc(v) if isinstance(v, datetime) else v) for k, v in row.items()},
        default=json_default, separators=(",", ":"),
    ).encode()
    headers = binary_headers(
        id=cloudevent_id(source.table, key_value, version), source=source.ce_source, type=source.ce_type,
        time=_utc(ts) if isinstance(ts, datetime) else None, subject=key_text,
    )
    return key_text.encode(), value, headers


def _producer(bootstrap: str, kafka_config: Mapping[str, Any] | None):
    return idempotent_producer(bootstrap, kafka_config, **{"linger.ms": 10})
