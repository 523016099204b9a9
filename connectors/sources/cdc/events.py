"""Change events: binary-mode CloudEvents whose data is laid out as Debezium's envelope.

Kafka key: the row's key (one key column: its text; several: a compact JSON object), the same
convention as the query-based source, so a product's tombstone decoding reads it.
Headers: `ce_id` = `<slot>:<commit lsn>:<n>` (n counts the events of the transaction from 0;
a snapshot row's id is `<slot>:<snapshot lsn>:r:<key>`, the same on a restarted snapshot),
`ce_source`, `ce_type`, `ce_time` (the commit time), `ce_subject` (the key text).
Value (JSON):

    {"before": {...} | null, "after": {...} | null, "op": "c" | "u" | "d" | "r" | "t",
     "ts_ms": <when flowsuite built the event>,
     "source": {"version", "connector": "postgresql", "name", "db", "schema", "table",
                "txId", "lsn" (the commit LSN), "change_lsn", "ts_ms" (commit time),
                "snapshot": "true" | "false"},
     "unchanged_toast": ["col", ...]}          # only when some were not sent

A delete is followed by a tombstone (same key, null value, its own ce_id); a key change is a
delete + tombstone for the old key and a create for the new one. An unchanged TOAST column
is left out of `after` and named in `unchanged_toast` — never a placeholder value.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.formats import binary_headers, rfc3339
from connectors.sources.cdc.pgoutput import UNCHANGED_TOAST, Relation, lsn_text
from connectors.sources.cdc.spec import CdcSourceSpec
from connectors.sources.cdc.types import json_converter

CONNECTOR_VERSION = "flowsuite-cdc/1"

Event = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class TxnContext:
    slot: str
    commit_lsn: int
    commit_time: datetime
    xid: int | None
    snapshot: bool = False


def row_image(rel: Relation, values: tuple | None) -> tuple[dict[str, Any] | None, list[str]]:
    """A tuple → {column: JSON value}, leaving out unchanged TOAST columns (returned apart)."""
    if values is None:
        return None, []
    out: dict[str, Any] = {}
    unchanged: list[str] = []
    for name, convert, v in zip(*_columns(rel), values, strict=False):
        if v is None:
            out[name] = None
        elif v is UNCHANGED_TOAST:
            unchanged.append(name)
        else:
            out[name] = convert(v)
    return out, unchanged


_plans: dict[int, tuple[Relation, tuple[str, ...], tuple]] = {}


def _columns(rel: Relation) -> tuple[tuple[str, ...], tuple]:
    """(names, text → JSON value converters) of a relation's columns, built once per Relation
    message (a bulk update is hundreds of thousands of rows of one relation)."""
    plan = _plans.get(id(rel))
    if plan is None or plan[0] is not rel:
        if len(_plans) > 1000:
            _plans.clear()
        plan = _plans[id(rel)] = (rel, tuple(c.name for c in rel.columns),
                                  tuple(json_converter(c.type_oid) for c in rel.columns))
    return plan[1], plan[2]


def key_text(key_columns: list[str], row: dict[str, Any]) -> str:
    if len(key_columns) == 1:
        v = row.get(key_columns[0])
        if type(v) is int:  # what json.dumps prints for an int, without its call
            return int.__repr__(v)
        return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    return json.dumps({k: row.get(k) for k in key_columns}, separators=(",", ":"), ensure_ascii=False)


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_encode_str = json.encoder.encode_basestring  # the string escaper of _dumps (ensure_ascii=False)
_names: dict[str, str] = {}


def _value_json(v: Any) -> str:
    t = type(v)
    if t is str:
        return _encode_str(v)
    if v is None:
        return "null"
    if t is int:
        return int.__repr__(v)
    if t is bool:
        return "true" if v else "false"
    if t is float and math.isfinite(v):
        return float.__repr__(v)
    return _dumps(v)  # arrays, and anything else: the encoder itself


def _row_json(row: dict[str, Any] | None) -> str:
    """`_dumps(row)` for a row image, byte for byte, in a third of the time: the column names'
    JSON is kept, the scalar types to_json_value returns are rendered as json does, the rest
    (arrays) by json itself."""
    if row is None:
        return "null"
    names = _names
    parts = []
    for k, v in row.items():
        name = names.get(k)
        if name is None:
            name = names[k] = _encode_str(k) + ":"
        parts.append(name + _value_json(v))
    return "{" + ",".join(parts) + "}"


class EventBuilder:
    """Builds events; the parts shared by a transaction's events are rendered once (a bulk
    update is hundreds of thousands of events of one transaction)."""

    def __init__(self, source: CdcSourceSpec, key_columns: list[str], database: str):
        self.source = source
        self.key_columns = key_columns
        self.database = database
        fixed = dict(binary_headers(id="", source=source.ce_source, type=source.ce_type))
        self._specversion = ("ce_specversion", fixed["ce_specversion"])
        self._ce_source = ("ce_source", fixed["ce_source"])
        self._ce_type = ("ce_type", fixed["ce_type"])
        self._content_type = ("content-type", fixed["content-type"])
        self._parts_of: tuple | None = None
        self._parts: tuple = ()

    def _txn_parts(self, ctx: TxnContext, schema: str, table: str) -> tuple:
        """(source JSON up to change_lsn, after it, the ce_time header, the ce_id prefix) of a transaction."""
        if self._parts_of is None or self._parts_of[0] is not ctx or self._parts_of[1:] != (schema, table):
            head = _dumps({"version": CONNECTOR_VERSION, "connector": "postgresql", "name": self.source.name,
                           "db": self.database, "schema": schema, "table": table, "txId": ctx.xid,
                           "lsn": ctx.commit_lsn})[:-1] + ',"change_lsn":'
            tail = f',"ts_ms":{int(ctx.commit_time.timestamp() * 1000)},"snapshot":"{"true" if ctx.snapshot else "false"}"}}'
            self._parts = (head, tail, ("ce_time", rfc3339(ctx.commit_time).encode()),
                           f"{ctx.slot}:{lsn_text(ctx.commit_lsn)}:")
            self._parts_of = (ctx, schema, table)
        return self._parts

    def _event(self, suffix: str, key: str | None, value: bytes | None, parts: tuple) -> Event:
        headers = [self._specversion, ("ce_id", (parts[3] + suffix).encode()), self._ce_source, self._ce_type, parts[2]]
        if key is not None:
            headers.append(("ce_subject", key.encode()))
        headers.append(self._content_type)
        return (None if key is None else key.encode(), value, headers)

    @staticmethod
    def _data(op: str, before, after, parts: tuple, change_lsn: int | None, unchanged: list[str]) -> bytes:
        text = (f'{{"before":{_row_json(before)},"after":{_row_json(after)},"op":"{op}","ts_ms":{int(time.time() * 1000)},'
                f'"source":{parts[0]}{"null" if change_lsn is None else change_lsn}{parts[1]}')
        if unchanged:
            text += ',"unchanged_toast":' + _dumps(unchanged)
        return (text + "}").encode()

    def snapshot_row(self, rel: Relation, row: dict[str, Any], ctx: TxnContext) -> Event:
        key = key_text(self.key_columns, row)
        parts = self._txn_parts(ctx, rel.namespace, rel.name)
        return self._event(f"r:{key}", key, self._data("r", None, row, parts, None, []), parts)

    def insert(self, rel: Relation, new: tuple, ctx: TxnContext, n: int, change_lsn: int | None) -> list[Event]:
        after, unchanged = row_image(rel, new)
        key = key_text(self.key_columns, after)
        parts = self._txn_parts(ctx, rel.namespace, rel.name)
        return [self._event(str(n), key, self._data("c", None, after, parts, change_lsn, unchanged), parts)]

    def update(self, rel: Relation, new: tuple, old: tuple | None, old_key: tuple | None, ctx: TxnContext, n: int,
               change_lsn: int | None) -> list[Event]:
        after, unchanged = row_image(rel, new)
        before, _ = row_image(rel, old if old is not None else old_key)
        if before is not None and old_key is not None:  # only the key columns were sent
            before = {c.name: before[c.name] for c in rel.columns if c.part_of_key and c.name in before}
        if before is not None and unchanged and old is not None:  # FULL identity: the old row has them
            for col in list(unchanged):
                if col in before:
                    after[col] = before[col]
                    unchanged.remove(col)
        key = key_text(self.key_columns, after)
        parts = self._txn_parts(ctx, rel.namespace, rel.name)
        if before is not None and all(k in before for k in self.key_columns):
            old_key_text = key_text(self.key_columns, before)
            if old_key_text != key:  # a key change: delete + tombstone for the old key, create for the new
                return [
                    *self._delete_pair(rel, before, old_key_text, ctx, n, change_lsn),
                    self._event(str(n + 2), key, self._data("c", None, after, parts, change_lsn, unchanged), parts),
                ]
        return [self._event(str(n), key, self._data("u", before, after, parts, change_lsn, unchanged), parts)]

    def delete(self, rel: Relation, old: tuple | None, old_key: tuple | None, ctx: TxnContext, n: int,
               change_lsn: int | None) -> list[Event]:
        before, _ = row_image(rel, old if old is not None else old_key)
        before = before or {}
        if old is None:  # REPLICA IDENTITY DEFAULT / INDEX: the key columns only
            before = {c.name: before.get(c.name) for c in rel.columns if c.part_of_key}
        return self._delete_pair(rel, before, key_text(self.key_columns, before), ctx, n, change_lsn)

    def _delete_pair(self, rel: Relation, before: dict, key: str, ctx: TxnContext, n: int,
                     change_lsn: int | None) -> list[Event]:
        parts = self._txn_parts(ctx, rel.namespace, rel.name)
        data = self._data("d", before, None, parts, change_lsn, [])
        return [self._event(str(n), key, data, parts), self._event(str(n + 1), key, None, parts)]

    def truncate(self, rel: Relation, ctx: TxnContext, n: int, change_lsn: int | None) -> list[Event]:
        parts = self._txn_parts(ctx, rel.namespace, rel.name)
        return [self._event(str(n), None, self._data("t", None, None, parts, change_lsn, []), parts)]
