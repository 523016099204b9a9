"""The warehouse sink: keeps one table per data product current, exactly once, by UPSERT.

What it syncs is the lake's *committed* rows (the metastore's live files), never Kafka: the
warehouse and the lake are derived from the same offset ranges, so their counts agree.

Exactly once
    The sink keeps its own offsets per Kafka partition in the warehouse
    (`flowsuite_sink_offsets`), and every batch writes its rows *and* advances those offsets
    in one warehouse transaction, as a compare-and-set on the offsets it started from. A crash
    anywhere leaves both as they were before the batch or after it; the next sync continues
    exactly where the last commit ended.

Never regress a row
    Within a batch only the latest record per key survives (vectorized: sort + hash
    group-by in Arrow). Each row stores `_partition` and `_offset` (and the spec's version
    column when `sinks.database.version` names one), and a row is only replaced by a record
    that is newer in the order (version, _partition, _offset) — null versions oldest. So the
    same batch applied twice, or batches applied out of order, end in the same table.

Deletes (`deletes: tombstone`)
    A tombstone is a version too. It deletes the row when it is newer than the row, and it is
    remembered in a side table (`<table>__deleted`, the key and the tombstone's version) so
    that an older record replayed later cannot bring the row back; a newer record re-inserts
    the row and forgets the tombstone. With a version *field*, a tombstone carries no value
    for it (it has only a key): it deletes the row it finds when it comes later in Kafka order
    (partition, offset), and remembers the deleted row's version, so only a record with a
    higher version brings the key back.

Dialects (SQLAlchemy Core)
    PostgreSQL: COPY (CSV written by Arrow) into a temporary staging table, then
    `INSERT … SELECT … ON CONFLICT (key) DO UPDATE … WHERE <newer>` with `RETURNING (xmax = 0)`
    to count inserts and updates. Fast path for tables without tombstones: while batches hold
    only new keys, the batch is COPYed straight into the table inside a savepoint; the
    primary key refuses it at the first existing key and the batch takes the staging path
    (`PostgresDialect.write_direct` in dialects/postgres.py). MariaDB/MySQL: multi-row INSERT into a temporary staging
    table, then `INSERT … SELECT … ON DUPLICATE KEY UPDATE col = IF(<newer>, VALUES(col), col)`
    with the version columns assigned last (MySQL evaluates assignments left to right, so the
    guard must still see the old version). SQLite: `INSERT … SELECT … ON CONFLICT DO UPDATE
    … WHERE <newer>`. On MariaDB and SQLite, inserts and updates are counted with two counting
    queries against the staging table in the same transaction, before the upsert.

Tables
    Created from the spec's schema (types in `column_type`, the one mapping) with the key as
    primary key. A new spec field becomes a nullable column (`ALTER TABLE … ADD COLUMN`); an
    incompatible change (a type changed, the key changed) raises `WarehouseSchemaError` that
    says what to do.

Secrets: URLs are rendered with the password hidden, and driver errors are re-raised as
`WarehouseError` without parameters or passwords.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_types
from sqlalchemy.engine import Connection, Engine

from connectors.faults import crash_point
from connectors.formats import lake_schema
from connectors.metastore import (
    FileRecord,
    Metastore,
    create_missing_tables,
    make_engine,
    schema_lock,
)
from connectors.spec import DataProductSpec, FieldSpec
from connectors.warehouse.dialects import STAGE_TABLE, dialect_for

log = logging.getLogger(__name__)

OFFSETS_TABLE = "flowsuite_sink_offsets"
# The row of the offsets table (kafka_partition = -1) holding the id of the next quarantine
# replay to apply (Metastore.replays_since): replayed records keep their original offsets,
# below the partitions' sink offsets, so they are followed by replay id instead.
REPLAY_SLOT = -1
POSITION = ("_partition", "_offset")  # Kafka position columns every warehouse row carries
READ_RETRIES = 5  # a file swapped away by a concurrent compaction: re-list and read again


class WarehouseError(RuntimeError):
    """A warehouse operation failed; the message never holds a password or row values."""


class WarehouseSchemaError(WarehouseError):
    """The warehouse table does not fit the spec in a way the sink must not fix by itself."""


class ConcurrentSyncError(WarehouseError):
    """The sink offsets moved under this batch: another sync of the product committed it."""


# --- types: the one mapping from spec types to SQL types --------------------------------------

# Length of string/bytes columns that are part of a MySQL primary key (or have max_length):
# InnoDB indexes at most 3072 bytes, so 255 utf8mb4 characters leave room for composite keys.
MYSQL_KEY_LENGTH = 255


def column_type(f: FieldSpec, dialect: str, in_key: bool) -> sa.types.TypeEngine:
    """The SQL type of a spec field in a dialect ('postgresql', 'mysql', 'sqlite')."""
    t = f.type
    if t == "string":
        if dialect == "mysql":
            if in_key or (f.max_length is not None and f.max_length <= 16_000):
                return sa.String(f.max_length or MYSQL_KEY_LENGTH)
            return mysql_types.LONGTEXT()
        return sa.Text()
    if t == "bytes":
        if dialect == "mysql":
            if in_key or (f.max_length is not None and f.max_length <= 16_000):
                return mysql_types.VARBINARY(f.max_length or MYSQL_KEY_LENGTH)
            return mysql_types.LONGBLOB()
        return sa.LargeBinary()
    if t == "int32":
        return sa.Integer()
    if t == "int64":
        return sa.BigInteger()
    if t == "float64":
        return sa.Double()
    if t == "boolean":
        return sa.Boolean()
    if t == "timestamp":
        # PostgreSQL keeps the zone (timestamptz); MariaDB and SQLite store UTC wall time.
        return mysql_types.DATETIME(fsp=6) if dialect == "mysql" else sa.DateTime(timezone=True)
    if t == "date":
        return sa.Date()
    raise ValueError(f"no SQL type for spec type {t!r}")  # pragma: no cover - spec validates


# What a reflected column type is, compared with a spec type ("family").
_SQL_NAMES = {"int32": "INTEGER", "int64": "BIGINT", "float64": "DOUBLE", "boolean": "BOOLEAN",
              "timestamp": "TIMESTAMP", "date": "DATE", "string": "TEXT", "bytes": "BINARY"}


def _family(sql_type: sa.types.TypeEngine, dialect: str) -> str | None:
    if isinstance(sql_type, sa.Boolean) or (dialect == "mysql" and isinstance(sql_type, mysql_types.TINYINT)):
        return "boolean"
    if isinstance(sql_type, sa.BigInteger):
        return "int64"
    if isinstance(sql_type, sa.Integer):
        name = type(sql_type).__name__.upper()
        return "int64" if "BIG" in name else "int32"
    if isinstance(sql_type, sa.Float | sa.Numeric):
        return "float64"
    if isinstance(sql_type, sa.DateTime):
        return "timestamp"
    if isinstance(sql_type, sa.Date):
        return "date"
    if isinstance(sql_type, sa.String):
        return "string"
    if isinstance(sql_type, sa.LargeBinary | sa.types._Binary):
        return "bytes"
    return None


def _render_type(sql_type: sa.types.TypeEngine, engine: Engine) -> str:
    try:
        return sql_type.compile(dialect=engine.dialect)
    except Exception:  # pragma: no cover - exotic reflected types
        return type(sql_type).__name__.upper()


# --- results ----------------------------------------------------------------------------------


@dataclass
class BatchCounts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped_stale: int = 0
    reduced: int = 0  # records dropped by the per-key reduction (an older record of a key in the batch)
    skipped_null_key: int = 0  # records whose key has a null; they cannot address a row

    def add(self, other: BatchCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class SyncResult:
    product: str
    table: str
    dialect: str
    url: str  # password hidden
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped_stale: int = 0
    reduced: int = 0
    skipped_null_key: int = 0
    rows_read: int = 0
    batches: int = 0
    offsets_before: dict[int, int] = field(default_factory=dict)
    offsets_after: dict[int, int] = field(default_factory=dict)
    target_offsets: dict[int, int] = field(default_factory=dict)  # the committed snapshot synced to
    added_columns: list[str] = field(default_factory=list)
    blocked_hours: list[str] = field(default_factory=list)  # hours a blocking check stopped
    replays_applied: int = 0  # quarantine replays brought in (their records carry old offsets)
    table_rows: int | None = None
    duration_s: float = 0.0

    @property
    def counts(self) -> BatchCounts:
        return BatchCounts(self.inserted, self.updated, self.deleted, self.skipped_stale,
                           self.reduced, self.skipped_null_key)

    def add_counts(self, counts: BatchCounts) -> None:
        for name in BatchCounts.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(counts, name))

    def lines(self) -> list[str]:
        """What `flowsuite warehouse sync` and the demo print about this sync."""
        offsets = ", ".join(f"p{p}: {self.offsets_before.get(p, 0):,} → {n:,}" for p, n in sorted(self.offsets_after.items()))
        lines = [
            f"table {self.table} in {self.url}: {self.table_rows:,} rows",
            f"this sync: {self.inserted:,} inserted, {self.updated:,} updated, {self.deleted:,} deleted, "
            f"{self.skipped_stale:,} stale skipped ({self.rows_read:,} rows read in {self.batches} batch(es), "
            f"{self.duration_s:.2f}s)",
            f"sink offsets (kept in the warehouse): {offsets or 'none yet'}",
        ]
        if self.added_columns:
            lines.append(f"added columns: {', '.join(self.added_columns)}")
        if self.blocked_hours:
            lines.append(f"stopped before hours blocked by a quality check: {', '.join(self.blocked_hours)}")
        return lines


# --- the per-key reduction (vectorized) -------------------------------------------------------


def version_columns(spec: DataProductSpec) -> list[str]:
    """The columns that order versions of a key, most significant first."""
    db = spec.sinks.database
    version = db.version if db else "offset"
    return [*([version] if version != "offset" else []), *POSITION]


def reduce_latest(spec: DataProductSpec, rows: pa.Table) -> tuple[pa.Table, int]:
    """Keep only the latest record per key (by version columns); returns (rows, null-key count).

    Sort by the version columns (nulls first, i.e. oldest), number the rows in that order,
    and keep each key's highest number with a hash group-by: no per-row Python.
    """
    keys = list(spec.key)
    null_key = None
    for k in keys:
        m = pc.is_null(rows.column(k))
        null_key = m if null_key is None else pc.or_(null_key, m)
    n_null = int(pc.sum(null_key).as_py() or 0) if null_key is not None and rows.num_rows else 0
    if n_null:
        rows = rows.filter(pc.invert(null_key))
    if rows.num_rows <= 1:
        return rows, n_null
    order = pc.sort_indices(rows, sort_keys=[(c, "ascending", "at_start") for c in version_columns(spec)])
    ranked = pa.table({**{k: rows.column(k).take(order) for k in keys}, "__rank": pa.array(range(rows.num_rows), pa.int64())})
    latest = ranked.group_by(keys, use_threads=False).aggregate([("__rank", "max")]).column("__rank_max")
    picked = pc.take(order, pc.take(latest, pc.sort_indices(latest)))  # back in version order
    return rows.take(picked), n_null


# --- the sink ---------------------------------------------------------------------------------


def _dialect_name(engine: Engine) -> str:
    name = engine.dialect.name
    return "mysql" if name in ("mysql", "mariadb") else name


class WarehouseSink:
    """One product's table in one warehouse. Build per sync; `dispose()` when done."""

    def __init__(self, spec: DataProductSpec, url: str | None = None, *, engine: Engine | None = None):
        if not spec.key:
            raise WarehouseSchemaError(f"{spec.name}: a warehouse table needs a key; set `key` in the spec")
        if engine is None and url is None:
            raise ValueError("give a warehouse url or an engine")
        self.spec = spec
        self.engine = engine or make_engine(url)  # SQLite: WAL + BEGIN IMMEDIATE, as the metastore
        self.dialect = _dialect_name(self.engine)
        if self.dialect not in ("postgresql", "mysql", "sqlite"):
            raise WarehouseError(f"warehouse dialect {self.engine.dialect.name!r} is not supported "
                                 "(PostgreSQL, MariaDB/MySQL or SQLite)")
        self.table_name = spec.table_name
        self.deletes = spec.deletes_enabled
        self.versions = version_columns(spec)
        self.version_field = self.versions[0] if len(self.versions) == 3 else None
        self.metadata = sa.MetaData()
        key = set(spec.key)
        cols = [
            sa.Column(f.name, column_type(f, self.dialect, f.name in key), primary_key=f.name in key,
                      nullable=f.name not in key, autoincrement=False)
            for f in spec.fields
        ]
        cols += [sa.Column("_partition", sa.Integer(), nullable=False), sa.Column("_offset", sa.BigInteger(), nullable=False)]
        db = spec.sinks.database
        # PostgreSQL: sinks.database.fillfactor leaves room on each page for HOT updates.
        table_options = ({"postgresql_with": {"fillfactor": db.fillfactor}}
                         if self.dialect == "postgresql" and db is not None and db.fillfactor else {})
        self.table = sa.Table(self.table_name, self.metadata, *cols, **table_options)
        self.offsets = sa.Table(
            OFFSETS_TABLE, self.metadata,
            sa.Column("product", sa.String(128), primary_key=True),
            sa.Column("table_name", sa.String(128), primary_key=True),
            sa.Column("kafka_partition", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("next_offset", sa.BigInteger(), nullable=False),
            sa.Column("updated_at", sa.Double(), nullable=False),
        )
        self.tombstones = None
        if self.deletes:
            tomb_cols = [sa.Column(k, column_type(spec.field(k), self.dialect, True), primary_key=True, autoincrement=False)
                         for k in spec.key]
            if self.version_field and self.version_field not in key:
                f = spec.field(self.version_field)
                tomb_cols.append(sa.Column(f.name, column_type(f, self.dialect, False), nullable=True))
            tomb_cols += [sa.Column("_partition", sa.Integer(), nullable=False), sa.Column("_offset", sa.BigInteger(), nullable=False)]
            self.tombstones = sa.Table(tombstone_table_name(self.table_name), self.metadata, *tomb_cols)
        self._ready = False
        self.sql = dialect_for(self)  # what differs between databases (connectors/warehouse/dialects/)

    # --- presentation -------------------------------------------------------------------

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def kind(self) -> str:
        """The Dagster kind of the warehouse: postgres, mysql or sqlite."""
        return {"postgresql": "postgres"}.get(self.dialect, self.dialect)

    def __repr__(self) -> str:
        return f"WarehouseSink({self.spec.name!r} → {self.table_name!r} at {self.safe_url!r})"

    def dispose(self) -> None:
        self.engine.dispose()

    def _sanitized(self, exc: BaseException, doing: str) -> WarehouseError:
        orig = getattr(exc, "orig", None) or exc
        text = " ".join(str(orig).split("\n")[0].split())[:500]
        password = self.engine.url.password
        if password:
            text = text.replace(str(password), "***")
        return WarehouseError(f"{self.spec.name}: {doing} failed on {self.safe_url}: {type(orig).__name__}: {text}")

    def _guarded(self, doing: str, fn: Callable[[], object]) -> object:
        try:
            return fn()
        except WarehouseError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise self._sanitized(exc, doing) from None

    # --- tables -------------------------------------------------------------------------

    def ensure_table(self) -> list[str]:
        """Create the table (and the sink's own tables) or bring it up to the spec.

        Returns the columns added. Raises WarehouseSchemaError for incompatible changes.
        """

        def run() -> list[str]:
            own = [t for t in (self.offsets, self.tombstones) if t is not None]  # shared by every product
            create_missing_tables(self.engine, self.metadata, "flowsuite.sink", own)
            with self.engine.begin() as conn, schema_lock(conn, f"flowsuite.table.{self.table_name}"):
                if not sa.inspect(conn).has_table(self.table_name):
                    self.table.create(conn)
                    return []
                added = self._evolve(conn)
            return added

        added = self._guarded("preparing the table", run)
        self._ready = True
        return added  # type: ignore[return-value]

    def _evolve(self, conn: Connection) -> list[str]:
        insp = sa.inspect(conn)
        existing = {c["name"]: c for c in insp.get_columns(self.table_name)}
        pk = list(insp.get_pk_constraint(self.table_name).get("constrained_columns") or [])
        t = self.table_name
        if sorted(pk) != sorted(self.spec.key):
            raise WarehouseSchemaError(
                f"{self.spec.name}: table {t} has primary key ({', '.join(pk) or 'none'}) but the spec's key is "
                f"({', '.join(self.spec.key)}); a key cannot change in place: point sinks.database.table at a new "
                "table (it is filled from the lake's history) or migrate the table and its primary key by hand"
            )
        problems = []
        for name in POSITION:
            if name not in existing:
                problems.append(f"column {name} is missing (the table was not created by flowsuite); "
                                "let flowsuite create a new table (sinks.database.table) or add it as NOT NULL")
        for f in self.spec.fields:
            col = existing.get(f.name)
            if col is None:
                continue
            family = _family(col["type"], self.dialect)
            if family != f.type:
                problems.append(
                    f"column {f.name} is {_render_type(col['type'], self.engine)} in the warehouse but the spec says "
                    f"{f.type}; migrate the column to {_SQL_NAMES[f.type]} (or rename the field in the spec)"
                )
        if problems:
            raise WarehouseSchemaError(f"{self.spec.name}: table {t} does not fit the spec: " + "; ".join(problems))
        added = []
        preparer = self.engine.dialect.identifier_preparer
        for f in self.spec.fields:
            if f.name in existing:
                continue
            sql_type = column_type(f, self.dialect, False).compile(dialect=self.engine.dialect)
            conn.exec_driver_sql(
                f"ALTER TABLE {preparer.quote(t)} ADD COLUMN {preparer.quote(f.name)} {sql_type} NULL"
            )
            added.append(f.name)
        if added:
            log.info("%s: added columns %s to %s", self.spec.name, ", ".join(added), t)
        return added

    # --- offsets ------------------------------------------------------------------------

    def sink_offsets(self) -> dict[int, int]:
        """The first offset per Kafka partition not yet in the table."""
        if not self._ready:
            self.ensure_table()

        def run() -> dict[int, int]:
            with self.engine.connect() as conn:
                return {p: n for p, n in self._read_offsets(conn).items() if p >= 0}

        return self._guarded("reading the sink offsets", run)  # type: ignore[return-value]

    def replay_watermark(self) -> int | None:
        """The id of the next quarantine replay to apply (None: none applied yet)."""
        if not self._ready:
            self.ensure_table()

        def run() -> int | None:
            with self.engine.connect() as conn:
                return self._read_offsets(conn).get(REPLAY_SLOT)

        return self._guarded("reading the replay watermark", run)  # type: ignore[return-value]

    def _read_offsets(self, conn: Connection, lock: bool = False) -> dict[int, int]:
        o = self.offsets
        q = sa.select(o.c.kafka_partition, o.c.next_offset).where(
            sa.and_(o.c.product == self.spec.name, o.c.table_name == self.table_name)
        )
        if lock and self.dialect != "sqlite":
            q = q.with_for_update()
        return {int(p): int(n) for p, n in conn.execute(q)}

    # --- applying a batch ---------------------------------------------------------------

    def apply(
        self,
        rows: pa.Table,
        advance_to: dict[int, int] | None = None,
        expected: dict[int, int] | None = None,
    ) -> BatchCounts:
        """Upsert (and delete) a batch of lake rows in one transaction.

        `advance_to` sets the sink offsets of those partitions in the same transaction;
        `expected` (the offsets the batch was planned from) makes that a compare-and-set.
        """
        if not self._ready:
            self.ensure_table()
        try:
            rows.validate(full=True)  # e.g. invalid UTF-8 in a string column, which no driver takes
        except pa.ArrowInvalid as exc:
            raise WarehouseError(f"{self.spec.name}: lake rows are not valid for their schema ({exc}); "
                                 "landing should have quarantined them") from None
        reduced, n_null = reduce_latest(self.spec, rows)
        counts = BatchCounts(reduced=rows.num_rows - n_null - reduced.num_rows, skipped_null_key=n_null)

        def run() -> BatchCounts:
            with self.engine.begin() as conn:
                if expected is not None:
                    current = self._read_offsets(conn, lock=True)
                    moved = {p: current.get(p) for p in (advance_to or {}) if current.get(p) != expected.get(p)}
                    if moved:
                        raise ConcurrentSyncError(
                            f"{self.spec.name}: sink offsets of {self.table_name} moved under this batch "
                            f"({moved}); another sync committed it"
                        )
                if reduced.num_rows:
                    self._write(conn, reduced, counts)
                crash_point("sink_rows_written")
                if advance_to:
                    self._write_offsets(conn, advance_to)
                crash_point("sink_before_commit")
            return counts

        return self._guarded("writing a batch", run)  # type: ignore[return-value]

    def _write_offsets(self, conn: Connection, advance_to: dict[int, int]) -> None:
        o = self.offsets
        now = time.time()
        for p, nxt in sorted(advance_to.items()):
            cond = sa.and_(o.c.product == self.spec.name, o.c.table_name == self.table_name, o.c.kafka_partition == p)
            if conn.execute(sa.update(o).where(cond).values(next_offset=int(nxt), updated_at=now)).rowcount != 1:
                conn.execute(sa.insert(o).values(product=self.spec.name, table_name=self.table_name,
                                                 kafka_partition=p, next_offset=int(nxt), updated_at=now))

    # The version order, as SQL: is `a` newer than `b`? (a, b: column collections)
    def newer(self, a, b) -> sa.ColumnElement[bool]:
        pos = sa.or_(a["_partition"] > b["_partition"], sa.and_(a["_partition"] == b["_partition"], a["_offset"] > b["_offset"]))
        v = self.version_field
        if v is None:
            return pos
        av, bv = a[v], b[v]
        return sa.or_(
            sa.and_(av.is_not(None), bv.is_(None)),
            av > bv,
            sa.and_(av.is_not_distinct_from(bv), pos),
        )

    def _delete_newer(self, s, t) -> sa.ColumnElement[bool]:
        """Does tombstone `s` delete row `t`? A tombstone without a version value goes by position."""
        if self.version_field is None:
            return self.newer(s, t)
        pos = sa.or_(s["_partition"] > t["_partition"], sa.and_(s["_partition"] == t["_partition"], s["_offset"] > t["_offset"]))
        return sa.or_(sa.and_(s[self.version_field].is_(None), pos),
                      sa.and_(s[self.version_field].is_not(None), self.newer(s, t)))

    def key_match(self, a, b) -> sa.ColumnElement[bool]:
        return sa.and_(*[a[k] == b[k] for k in self.spec.key])

    def _stage_table(self) -> sa.Table:
        md = sa.MetaData()
        cols = [sa.Column(c.name, c.type, nullable=True) for c in self.table.columns]
        cols.append(sa.Column("_deleted", sa.Boolean(), nullable=False))
        return sa.Table(STAGE_TABLE, md, *cols, prefixes=["TEMPORARY"], **self.sql.stage_table_kwargs())

    def update_order(self, names: list[str]) -> list[str]:
        """Columns a newer record overwrites: non-key columns first, version columns last (MySQL
        assigns left to right and the guard must see the old version; `_offset` before `_partition`)."""
        key = list(self.spec.key)
        order = [c for c in names if c not in key and c not in self.versions]
        order += [c for c in ("_offset", "_partition") if c in names]
        if self.version_field and self.version_field in names and self.version_field not in key:
            order.append(self.version_field)
        return order

    def _write(self, conn: Connection, rows: pa.Table, counts: BatchCounts) -> None:
        if self.sql.write_direct(conn, rows):
            counts.inserted += rows.num_rows
            return
        stage = self._stage_table()
        self.sql.open_stage(conn, stage)
        names = [c.name for c in self.table.columns]
        deleted = (pc.fill_null(rows.column("_deleted"), False) if "_deleted" in rows.column_names
                   else pa.array([False] * rows.num_rows, pa.bool_()))
        data = rows.select(names).append_column("_deleted", deleted)
        self.sql.load_stage(conn, stage, data)
        s, t = stage.c, self.table.c
        n_deletes = int(pc.sum(deleted).as_py() or 0) if rows.num_rows else 0
        n_records = rows.num_rows - n_deletes

        tomb = self.tombstones
        if tomb is not None and n_deletes:
            # Remember the tombstones that win (newer than the row, or no row), then delete.
            kept = self.version_field if (self.version_field and self.version_field in tomb.c) else None
            tomb_cols = [c.name for c in tomb.columns]
            exprs = []
            for c in tomb_cols:
                if c == kept:
                    exprs.append(sa.func.coalesce(s[c], t[c]).label(c))
                else:
                    exprs.append(s[c])
            sel = (
                sa.select(*exprs)
                .select_from(stage.outerjoin(self.table, self.key_match(s, t)))
                .where(sa.and_(s["_deleted"] == sa.true(),
                               sa.or_(t[self.spec.key[0]].is_(None), self._delete_newer(s, t))))
            )
            self.sql.upsert_select(conn, tomb, tomb_cols, sel, self.update_order(tomb_cols))
            stale_tombs = conn.execute(
                sa.select(sa.func.count()).select_from(stage.join(self.table, self.key_match(s, t)))
                .where(sa.and_(s["_deleted"] == sa.true(), sa.not_(self._delete_newer(s, t))))
            ).scalar_one()
            counts.skipped_stale += int(stale_tombs)
            gone = sa.delete(self.table).where(
                sa.exists(sa.select(sa.literal(1)).select_from(stage).where(
                    sa.and_(s["_deleted"] == sa.true(), self.key_match(s, t), self._delete_newer(s, t))
                ))
            )
            counts.deleted += conn.execute(gone).rowcount
            crash_point("sink_deleted")

        if n_records:
            where = s["_deleted"] == sa.false()
            if tomb is not None:
                tb = tomb.c
                where = sa.and_(where, sa.not_(sa.exists(sa.select(sa.literal(1)).select_from(tomb).where(
                    sa.and_(self.key_match(s, tb), sa.not_(self.newer(s, tb)))))))
            sel = sa.select(*[s[c] for c in names]).select_from(stage).where(where)
            self.sql.upsert_records(conn, stage, sel, names, n_records, counts)
            if tomb is not None:
                # A record newer than a tombstone brought its key back: the row guards it now.
                tb = tomb.c
                conn.execute(sa.delete(tomb).where(sa.and_(
                    sa.exists(sa.select(sa.literal(1)).select_from(stage).where(
                        sa.and_(s["_deleted"] == sa.false(), self.key_match(s, tb)))),
                    sa.exists(sa.select(sa.literal(1)).select_from(self.table).where(self.key_match(t, tb))),
                )))
        # MySQL: `DROP TEMPORARY TABLE`, never plain DROP TABLE, which commits implicitly and so
        # would commit the rows without the offsets (dialects/mysql.py).
        self.sql.close_stage(conn)

    # --- reading back -------------------------------------------------------------------

    def row_count(self) -> int:
        def run() -> int:
            with self.engine.connect() as conn:
                return int(conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one())

        return self._guarded("counting rows", run)  # type: ignore[return-value]

    def read_rows(self) -> list[dict]:
        """Every row, ordered by key (for tests and small tables)."""

        def run() -> list[dict]:
            with self.engine.connect() as conn:
                q = sa.select(self.table).order_by(*[self.table.c[k] for k in self.spec.key])
                return [dict(r) for r in conn.execute(q).mappings()]

        return self._guarded("reading rows", run)  # type: ignore[return-value]


def tombstone_table_name(table: str) -> str:
    """`<table>__deleted`, shortened with a hash when it would pass 63 characters."""
    name = f"{table}__deleted"
    if len(name) <= 63:
        return name
    digest = hashlib.sha1(table.encode()).hexdigest()[:8]
    return f"{table[:45]}_{digest}__deleted"


# --- syncing from the lake --------------------------------------------------------------------


def _file_covers(f: FileRecord, partition: int, lo: int, hi: int) -> bool:
    """Can `f` hold rows of `partition` with offsets in [lo, hi)?"""
    if f.ranges:
        runs = f.ranges.get(partition) or f.ranges.get(str(partition))  # type: ignore[call-overload]
        if not runs:
            return False
        return any(first < hi and last >= lo for first, last in runs)
    if f.partition is not None and f.partition != partition:
        return False
    low = f.min_offset if f.min_offset is not None else f.start_offset
    high = f.max_offset if f.max_offset is not None else (f.end_offset - 1 if f.end_offset is not None else None)
    if low is not None and low >= hi:
        return False
    return not (high is not None and high < lo)


def _partitions_of(f: FileRecord) -> set[int]:
    if f.ranges:
        return {int(p) for p in f.ranges}
    return {f.partition} if f.partition is not None else set()


def read_window(
    spec: DataProductSpec, lake, files: list[FileRecord], window: dict[int, tuple[int, int]]
) -> tuple[pa.Table, int]:
    """Rows of the live files whose (partition, offset) falls in the window; (rows, files read).

    Predicate pushdown: the filter on `_partition`/`_offset` lets Parquet skip row groups by
    their statistics. Files written before a field was added get that column as nulls.
    """
    schema = lake_schema(spec)
    pieces, n_files = [], 0
    for f in files:
        parts = [(p, lo, hi) for p, (lo, hi) in window.items() if _file_covers(f, p, lo, hi)]
        if not parts:
            continue
        expr = None
        for p, lo, hi in parts:
            e = (pads.field("_partition") == p) & (pads.field("_offset") >= lo) & (pads.field("_offset") < hi)
            expr = e if expr is None else expr | e
        dataset = pads.dataset(lake.full(f.path), filesystem=lake.fs, format="parquet")
        present = [n for n in schema.names if n in dataset.schema.names]
        table = dataset.to_table(columns=present, filter=expr)
        for name in schema.names:
            if name not in present:
                table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
        pieces.append(table.select(schema.names).cast(schema))
        n_files += 1
    if not pieces:
        return schema.empty_table(), 0
    return pa.concat_tables(pieces), n_files


def plan_windows(
    start: dict[int, int], target: dict[int, int], batch_rows: int
) -> Iterator[dict[int, tuple[int, int]]]:
    """Offset windows per partition of at most `batch_rows` offsets in total.

    An offset holds at most one row (quarantined offsets hold none), so a window of N
    offsets never holds more than N rows: memory per batch is bounded without counting.
    """
    pos = dict(start)
    while True:
        active = sorted(p for p in target if pos.get(p, 0) < target[p])
        if not active:
            return
        width = max(1, batch_rows // len(active))
        yield {p: (pos.get(p, 0), min(target[p], pos.get(p, 0) + width)) for p in active}
        for p in active:
            pos[p] = min(target[p], pos.get(p, 0) + width)


def _read_live_window(spec, lake, metastore: Metastore, window: dict[int, tuple[int, int]],
                      hour: str | None = None) -> pa.Table:
    """The committed rows of `window` (per partition [lo, hi)) from the live files, of one
    hour when given. A concurrent compaction may swap a file away between listing and
    reading: then the files are listed again."""
    for attempt in range(READ_RETRIES):
        files = metastore.live_files(spec.name, hour=hour)
        try:
            return read_window(spec, lake, files, window)[0]
        except (FileNotFoundError, OSError) as exc:
            if attempt + 1 == READ_RETRIES:
                raise WarehouseError(f"{spec.name}: lake files kept changing while reading: {exc}") from None
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _apply_replays(spec, lake, metastore: Metastore, sink: WarehouseSink, current: dict[int, int],
                   blocked: set[str], result: SyncResult) -> None:
    """Bring in quarantine replays since the sink's replay watermark, one transaction each.

    A replay's records carry their original offsets; those below the partition's sink offset
    never come with the offset windows, so the replay's offset span is read from the live
    files of its hour. Rows in that span that were synced before are applied again, which the
    version guard makes a no-op (counted as stale); records at or above the sink offset come
    with the windows. A replay into a blocked hour waits, and so do the replays after it.
    """
    slot = sink.replay_watermark()
    for replay in metastore.replays_since(spec.name, slot or 0):
        if replay.hour in blocked:
            break
        lo, hi = replay.min_offset, min(replay.max_offset + 1, current.get(replay.partition, 0))
        rows = lake_schema(spec).empty_table()
        if hi > lo:
            rows = _read_live_window(spec, lake, metastore, {replay.partition: (lo, hi)}, hour=replay.hour)
        counts = sink.apply(rows, advance_to={REPLAY_SLOT: replay.id + 1}, expected={REPLAY_SLOT: slot})
        slot = replay.id + 1
        result.replays_applied += 1
        result.rows_read += rows.num_rows
        result.add_counts(counts)


def sync(
    spec: DataProductSpec,
    *,
    lake,
    metastore: Metastore,
    sink: WarehouseSink | None = None,
    url: str | None = None,
    batch_rows: int | None = None,
    progress: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Bring the product's warehouse table up to the lake's committed offsets.

    Snapshots `Metastore.committed_offsets` first (a landing committing meanwhile is left
    for the next sync, never half-applied), then works through offset windows from the
    sink's offsets to that snapshot, one warehouse transaction per window. Hours a blocking
    quality check stopped (`blocked_reason` in the metastore) are a wall: each partition
    stops at the first offset of a blocked hour until the owner clears it.
    """
    started = time.monotonic()
    own = sink is None
    if sink is None:
        if url is None:
            raise ValueError("give a warehouse url or a sink")
        sink = WarehouseSink(spec, url)
    db = spec.sinks.database
    batch_rows = batch_rows or (db.batch_rows if db else 50_000)
    result = SyncResult(product=spec.name, table=sink.table_name, dialect=sink.dialect, url=sink.safe_url)
    try:
        result.added_columns = sink.ensure_table()
        before = sink.sink_offsets()
        result.offsets_before = dict(before)
        target = {p: s.next_offset for p, s in metastore.committed_offsets(spec.name).items()}
        # A blocked hour stops each partition at its first offset in that hour.
        blocked = [h.hour for h in metastore.hours(spec.name) if h.blocked_reason]
        if blocked:
            result.blocked_hours = blocked
            walls: dict[int, int] = {}
            for f in metastore.live_files(spec.name):
                if f.hour not in blocked:
                    continue
                for p in _partitions_of(f):
                    first = (min(r[0] for r in f.ranges[p]) if f.ranges and p in f.ranges
                             else f.min_offset if f.min_offset is not None else f.start_offset)
                    if first is not None:
                        walls[p] = min(walls.get(p, first), first)
            target = {p: min(n, walls.get(p, n)) for p, n in target.items()}
        result.target_offsets = dict(target)
        for p, n in before.items():
            if p in target and n > target[p] and not blocked:
                log.warning("%s: sink offset of partition %d (%d) is past the lake's committed offset (%d); "
                            "the lake's history was reset? nothing is synced for it", spec.name, p, n, target[p])
        current = dict(before)
        for window in plan_windows(before, target, batch_rows):
            rows = _read_live_window(spec, lake, metastore, window)
            advance = {p: hi for p, (_lo, hi) in window.items()}
            counts = sink.apply(rows, advance_to=advance, expected={p: current.get(p) for p in advance})
            current.update(advance)
            result.rows_read += rows.num_rows
            result.batches += 1
            result.add_counts(counts)
            if progress:
                progress(result)
        _apply_replays(spec, lake, metastore, sink, current, set(blocked), result)
        result.offsets_after = dict(current)
        result.table_rows = sink.row_count()
    finally:
        result.duration_s = time.monotonic() - started
        if own:
            sink.dispose()
    return result
