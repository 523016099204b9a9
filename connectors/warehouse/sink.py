# Over 400 lines: one table's schema management and guarded batch write; databases differ in dialects/.
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
    PostgreSQL: COPY (CSV written by Arrow) into a temporary staging table, then one
    `MERGE … WHEN MATCHED AND <newer> THEN UPDATE … WHEN NOT MATCHED THEN INSERT` (15+; inserts
    and updates counted from the transaction's table statistics), or before 15
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

Errors: SQLAlchemy and driver errors never leave the sink raw. Connection-level ones
(OperationalError, InterfaceError, a disconnect, a pool timeout: the database away or
restarting) become `WarehouseError`, transient; every other one (a URL that does not parse, a
missing driver, a constraint, a permission, SQL the database refuses) becomes
`WarehouseRefusedError`, terminal, since the same statement meets the same answer. Both carry
no parameters, row values or passwords; URLs are rendered with the password hidden.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from connectors.errors import TransientError
from connectors.faults import crash_point
from connectors.metastore import (
    create_missing_tables,
    make_engine,
    schema_lock,
)
from connectors.spec import DataProductSpec
from connectors.warehouse.cdc import by_unchanged, carry_unchanged, split_at_truncate
from connectors.warehouse.dialects import STAGE_TABLE, dialect_for
from connectors.warehouse.reduce import POSITION, reduce_latest, version_columns
from connectors.warehouse.results import BatchCounts
from connectors.warehouse.types import SQL_NAMES, column_type, fits, render_type

log = logging.getLogger(__name__)

OFFSETS_TABLE = "flowsuite_sink_offsets"
# The row of the offsets table (kafka_partition = -1) holding the id of the next quarantine
# replay to apply (Metastore.replays_since): replayed records keep their original offsets,
# below the partitions' sink offsets, so they are followed by replay id instead.
REPLAY_SLOT = -1


class WarehouseError(TransientError, RuntimeError):
    """A warehouse operation failed; the message never holds a password or row values.
    Transient (the database away, a lost race) unless a subclass says otherwise."""


class WarehouseRefusedError(WarehouseError):
    """The warehouse (or its URL, or its driver) refused what the sink asked: retrying the same
    statement gets the same answer, so a person must act."""

    transient = False


class WarehouseSchemaError(WarehouseError):
    """The warehouse table does not fit the spec in a way the sink must not fix by itself."""

    transient = False  # retrying reads the same answer: a person must act


class ConcurrentSyncError(WarehouseError):
    """The sink offsets moved under this batch: another sync of the product committed it."""


# --- the sink ---------------------------------------------------------------------------------


def _open(spec: DataProductSpec, url: str) -> Engine:
    """The engine for `url`; a URL SQLAlchemy cannot parse or whose driver is missing is refused
    by its error's type alone: the URL may hold a password, so it is never echoed."""
    try:
        return make_engine(url)
    except (sa.exc.ArgumentError, ValueError, ImportError) as exc:  # ValueError: e.g. a port not a number
        raise WarehouseRefusedError(
            f"{spec.name}: cannot open the warehouse: {type(exc).__name__} (check the warehouse URL "
            "and that its driver is installed)") from None


# The database away, restarting or out of connections: the same statement may pass later.
_CONNECTION_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError,
                      sa.exc.TimeoutError)


def _connection_error(exc: BaseException) -> bool:
    return isinstance(exc, _CONNECTION_ERRORS) or bool(getattr(exc, "connection_invalidated", False))


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
        self.engine = engine or _open(spec, url)  # SQLite: WAL + BEGIN IMMEDIATE, as the metastore
        self.dialect = _dialect_name(self.engine)
        if self.dialect not in ("postgresql", "mysql", "sqlite"):
            raise WarehouseRefusedError(f"warehouse dialect {self.engine.dialect.name!r} is not supported "
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
        kind = WarehouseError if _connection_error(exc) else WarehouseRefusedError
        return kind(f"{self.spec.name}: {doing} failed on {self.safe_url}: {type(orig).__name__}: {text}")

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
            if not fits(col["type"], self.dialect, f):
                want = (f"decimal({f.precision},{f.scale or 0})" if f.type == "decimal" else f.type)
                problems.append(
                    f"column {f.name} is {render_type(col['type'], self.engine)} in the warehouse but the spec says "
                    f"{want}; migrate the column to {SQL_NAMES[f.type]} (or rename the field in the spec)"
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
        # Change data capture: a truncate empties the table first; unchanged TOAST columns are
        # carried from the key's previous version or left alone (connectors/warehouse/cdc.py).
        rows, truncated = split_at_truncate(rows)
        rows = carry_unchanged(rows, list(self.spec.key))
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
                if truncated:
                    counts.deleted += conn.execute(sa.delete(self.table)).rowcount
                    if self.tombstones is not None:
                        conn.execute(sa.delete(self.tombstones))
                # One write per set of unchanged TOAST columns (usually one); each closes its stage.
                for keep, part in by_unchanged(reduced) if reduced.num_rows else ():
                    self._write(conn, part, counts, keep)
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

    def _write(self, conn: Connection, rows: pa.Table, counts: BatchCounts, keep: tuple[str, ...] = ()) -> None:
        """`keep`: columns the rows did not send (unchanged TOAST): the upsert leaves them alone."""
        if not keep and self.sql.write_direct(conn, rows):
            counts.inserted += rows.num_rows
            return
        stage = self._stage_table()
        self.sql.open_stage(conn, stage)
        names = [c.name for c in self.table.columns if c.name not in keep]
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
