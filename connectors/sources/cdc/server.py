"""The PostgreSQL side of capture: connections, preconditions, the publication and the slot.

Every check fails with a message that says what to change on the server, never with a
driver's stack trace, and never with the connection URL's password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from connectors.sources.cdc.pgoutput import lsn_text, parse_lsn
from connectors.sources.cdc.spec import CdcError, CdcSourceSpec

# Output settings of every connection (the walsender's too): the text of a value is then the
# same in the snapshot and in the stream, whatever the server's defaults.
SESSION_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=iso_8601 "
                   "-c extra_float_digits=3 -c bytea_output=hex")


class SourceUnreachable(CdcError):
    """The source database did not accept a connection (down, restarting, wrong address)."""


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://…`) as libpq takes it (`postgresql://…`)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise CdcError("change data capture needs a postgresql:// connection URL")
    return f"postgresql://{rest}"


def safe_url(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _psycopg2():
    import psycopg2
    import psycopg2.extras

    return psycopg2


def connect(url: str, *, replication: bool = False, autocommit: bool = True):
    psycopg2 = _psycopg2()
    kw: dict[str, Any] = {"options": SESSION_OPTIONS, "connect_timeout": 10, "application_name": "flowsuite-cdc"}
    if replication:
        kw["connection_factory"] = psycopg2.extras.LogicalReplicationConnection
    try:
        conn = psycopg2.connect(libpq_url(url), **kw)
    except psycopg2.OperationalError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if replication and "replication" in text.lower():
            raise CdcError(f"the server refused a replication connection ({text}); the user needs the "
                           "REPLICATION attribute (ALTER ROLE … REPLICATION) and pg_hba.conf must allow it") from None
        raise SourceUnreachable(f"cannot connect to {safe_url(url)}: {text}") from None
    if not replication:
        conn.autocommit = autocommit
    return conn


def _one(conn, sql: str, args: tuple = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return row


def check_server(conn, source: CdcSourceSpec) -> str:
    """wal_level, the REPLICATION attribute and the table; returns its replica identity (d/n/f/i)."""
    (wal_level,) = _one(conn, "SHOW wal_level")
    if wal_level != "logical":
        raise CdcError(f"{source.name}: the server's wal_level is {wal_level!r}; change data capture needs "
                       "wal_level = logical (ALTER SYSTEM SET wal_level = logical, then restart the server)")
    user, can = _one(conn, "SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user")
    if not can:
        raise CdcError(f"{source.name}: the user {user!r} lacks the REPLICATION attribute "
                       f"(ALTER ROLE {user} REPLICATION) that a replication slot needs")
    row = _one(conn, "SELECT c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
               (source.table_schema, source.table))
    if row is None:
        raise CdcError(f"{source.name}: table {source.qualified_table} does not exist in the source database")
    return row[0]


def table_columns(conn, source: CdcSourceSpec) -> list[tuple[str, int]]:
    """(name, type OID) of the table's live columns, in order."""
    with conn.cursor() as cur:
        cur.execute("SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    (f'"{source.table_schema}"."{source.table}"',))
        return [(n, int(t)) for n, t in cur.fetchall()]


def primary_key(conn, source: CdcSourceSpec) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
                    (f'"{source.table_schema}"."{source.table}"',))
        return [r[0] for r in cur.fetchall()]


def ensure_publication(conn, source: CdcSourceSpec) -> bool:
    """Create the publication FOR TABLE <table> when missing; True when created."""
    pub = source.publication_name
    if _one(conn, "SELECT 1 FROM pg_publication WHERE pubname = %s", (pub,)) is None:
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE PUBLICATION "{pub}" FOR TABLE "{source.table_schema}"."{source.table}"')
        except Exception as exc:  # noqa: BLE001 - psycopg2's error classes; the server's words matter
            raise CdcError(f"{source.name}: cannot create publication {pub!r}: {_first_line(exc)} "
                           "(the user must own the table, or create the publication as its owner)") from None
        return True
    if _one(conn, "SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s AND tablename = %s",
            (pub, source.table_schema, source.table)) is None:
        raise CdcError(f"{source.name}: publication {pub!r} exists but does not publish {source.qualified_table} "
                       f"(ALTER PUBLICATION {pub} ADD TABLE {source.qualified_table})")
    return False


@dataclass(frozen=True)
class SlotInfo:
    name: str
    plugin: str
    active: bool
    confirmed_flush_lsn: int | None
    retained_wal_bytes: int | None  # current WAL position − restart_lsn: what the slot keeps on disk
    lag_bytes: int | None  # current WAL position − confirmed_flush_lsn: not yet confirmed by us
    wal_status: str | None

    def describe(self) -> str:
        mb = lambda b: "?" if b is None else f"{b / 1024**2:.1f} MB"  # noqa: E731
        flushed = lsn_text(self.confirmed_flush_lsn) if self.confirmed_flush_lsn is not None else "none"
        return (f"slot {self.name}: {'active' if self.active else 'inactive'}, confirmed {flushed}, "
                f"retains {mb(self.retained_wal_bytes)} of WAL, lag {mb(self.lag_bytes)}")


def slot_info(conn, slot: str) -> SlotInfo | None:
    row = _one(conn, "SELECT slot_name, plugin, active, confirmed_flush_lsn::text, "
                     "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
                     "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, wal_status "
                     "FROM pg_replication_slots WHERE slot_name = %s AND database = current_database()", (slot,))
    if row is None:
        return None
    name, plugin, active, flushed, retained, lag, status = row
    return SlotInfo(name, plugin, bool(active), parse_lsn(flushed) if flushed else None,
                    None if retained is None else int(retained), None if lag is None else int(lag), status)


def current_wal_lsn(conn) -> int:
    return parse_lsn(_one(conn, "SELECT pg_current_wal_lsn()::text")[0])


@dataclass(frozen=True)
class CreatedSlot:
    consistent_lsn: int
    snapshot_name: str | None


def create_slot(repl_conn, source: CdcSourceSpec) -> CreatedSlot:
    """CREATE_REPLICATION_SLOT … LOGICAL pgoutput, exporting its snapshot (valid while
    `repl_conn` runs no other command)."""
    try:
        with repl_conn.cursor() as cur:
            cur.execute(f'CREATE_REPLICATION_SLOT "{source.slot_name}" LOGICAL pgoutput EXPORT_SNAPSHOT')
            _name, consistent, snapshot, _plugin = cur.fetchone()
    except Exception as exc:  # noqa: BLE001
        raise CdcError(f"{source.name}: cannot create replication slot {source.slot_name!r}: {_first_line(exc)}") from None
    return CreatedSlot(parse_lsn(consistent), snapshot)


def drop_slot(conn, slot: str) -> bool:
    if _one(conn, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)) is None:
        return False
    with conn.cursor() as cur:
        cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
