"""What `flowsuite validate` and `flowsuite status` say about a change-data-capture source.

`source_warnings` reads the declaration against its product and, when the database answers,
against the server: wal_level, the REPLICATION attribute, the table, its REPLICA IDENTITY
(DEFAULT: a delete's `before` has the key only), product fields the table lacks and field
types that would lose information. `slot_report` gives the slot's retained WAL and lag.
"""

from __future__ import annotations

from connectors.sources.cdc.server import (
    CdcError,
    SlotInfo,
    check_server,
    connect,
    slot_info,
    table_columns,
)
from connectors.sources.cdc.spec import CdcSourceSpec
from connectors.sources.cdc.types import PRODUCT_TYPE, type_name
from connectors.sources.common import UnsetVariableError
from connectors.spec import DataProductSpec

IDENTITY = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "USING INDEX"}


def static_warnings(source: CdcSourceSpec, product: DataProductSpec) -> list[str]:
    out = []
    if not product.deletes_enabled:
        out.append(f"product {product.name!r} does not take deletes (sinks.database.deletes: tombstone): "
                   "deleted rows stay in its warehouse table")
    if not product.cloudevents.dedupe_on_id:
        out.append(f"product {product.name!r} should set cloudevents.dedupe_on_id: true; without it an event "
                   "published again after a crash lands twice")
    return out


def source_warnings(source: CdcSourceSpec, product: DataProductSpec, *, url: str | None = None) -> list[str]:
    """Warnings about the declaration, and about the server when it can be reached."""
    out = static_warnings(source, product)
    try:
        conn = connect(url or source.resolved_url())
    except (CdcError, UnsetVariableError) as exc:  # away, or its URL's ${VAR} unset where this runs
        return [*out, f"not checked against the server: {exc}"]
    try:
        identity = check_server(conn, source)
        if identity in ("d", "i"):
            out.append(f"{source.qualified_table} has REPLICA IDENTITY {IDENTITY[identity]}: a delete's `before` holds "
                       "the key columns only and an update's `before` is null (ALTER TABLE … REPLICA IDENTITY FULL "
                       "for whole before-images)")
        elif identity == "n":
            out.append(f"{source.qualified_table} has REPLICA IDENTITY NOTHING: the server refuses its updates and "
                       "deletes while it is published")
        columns = dict(table_columns(conn, source))
        for f in product.fields:
            oid = columns.get(f.name)
            if oid is None:
                out.append(f"field {f.name!r} of {product.name!r} is not a column of {source.qualified_table}: it stays null")
                continue
            want = PRODUCT_TYPE.get(oid, "string")
            if f.type != want and not (want == "int32" and f.type == "int64"):
                out.append(f"field {f.name!r} is {f.type} but column {f.name} is {type_name(oid)}: declare it {want} "
                           "(docs/cdc.md, type mapping)")
    except CdcError as exc:
        out.append(str(exc))
    finally:
        conn.close()
    return out


def slot_report(source: CdcSourceSpec, *, url: str | None = None) -> SlotInfo | None:
    """The slot's state; None when it does not exist yet (CdcError when the server is unreachable,
    UnsetVariableError when a ${VAR} of its URL is unset)."""
    conn = connect(url or source.resolved_url())
    try:
        return slot_info(conn, source.slot_name)
    finally:
        conn.close()
