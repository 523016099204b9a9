"""Landing change events (connectors/sources/cdc publishes them): the Debezium envelope → the product's columns plus `_op`, `_lsn`, `_unchanged`.

A product fed by change data capture declares `cloudevents.data_layout: debezium`. Its
landed rows hold:

- the product's fields from `after` (from the key in `before` for a delete);
- `_op`: c (insert), u (update), d (delete), r (snapshot read), t (truncate); null for the
  tombstone that follows a delete;
- `_lsn`: the commit LSN of the change's transaction (the snapshot's consistent point for r);
- `_unchanged`: the columns whose value the server did not send because the update did not
  change a TOASTed (large, out-of-line) value. Those columns are **null in the row and named
  here**: a reader must take them from the key's previous version (the warehouse sink does:
  a partial update that keeps the stored value). Null when every column was sent;
- `_deleted` (with `sinks.database.deletes: tombstone`): true for d and for the tombstone.

A truncate lands as one row with `_op = 't'`, every value column null and a null key; the
warehouse sink deletes the table's rows before applying what follows it.

Arrays and JSON objects in `after` land as their JSON text in string fields; a bytes field's
base64 text is decoded back into bytes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors.formats.base import Batch, Decoded
from connectors.formats.cloudevents import CloudEventsDecoder
from connectors.formats.schema import CDC_FIELDS, PROVENANCE, QUARANTINE_SCHEMA, lake_schema
from connectors.spec import DataProductSpec

CDC_NAMES = {f.name for f in CDC_FIELDS}


class DebeziumDecoder:
    """Decodes batches of a `cloudevents.data_layout: debezium` product (wraps CloudEventsDecoder)."""

    needs_headers = True

    def __init__(self, spec: DataProductSpec, topic: str | None = None, seen_ids=()):
        self.spec = spec
        self.inner = CloudEventsDecoder(spec, topic, seen_ids)
        self.schema = lake_schema(spec)
        self.inner.schema = pa.schema([f for f in self.schema if f.name not in CDC_NAMES])
        self._string_fields = {f.name for f in spec.fields if f.type == "string"}
        self._bytes_fields = [f.name for f in spec.fields if f.type == "bytes"]

    @property
    def seen(self) -> dict[str, str]:
        return self.inner.seen

    def decode(self, batch: Batch) -> Decoded:
        values: list[bytes | None] = []
        meta: dict[int, tuple[str | None, int | None, list[str] | None]] = {}
        truncates: list[int] = []
        keep: list[int] = []
        for i, value in enumerate(batch.values):
            op, lsn, unchanged, payload = self._unwrap(value)
            if op == "t":
                truncates.append(i)
                continue
            keep.append(i)
            values.append(payload)
            meta[batch.offsets[i]] = (op, lsn, unchanged)
        sub = Batch(batch.partition, values, [batch.keys[i] for i in keep], [batch.offsets[i] for i in keep],
                    [batch.timestamps[i] for i in keep], [batch.headers[i] for i in keep] if batch.headers else None)
        inner = self.inner.decode(sub) if keep else None
        valid, hours, invalid = self._with_cdc_columns(inner, meta)
        if truncates:
            t_valid, t_hours, t_invalid = self._truncate_rows(batch, truncates)
            valid, hours = pa.concat_tables([valid, t_valid]), pa.concat_arrays([hours, t_hours])
            order = pc.sort_indices(valid.column("_offset"))
            valid, hours = valid.take(order), hours.take(order)
            invalid = pa.concat_tables([invalid, t_invalid])
        return Decoded(valid=valid, hours=hours, invalid=invalid)

    # --- one message ------------------------------------------------------------------------

    def _unwrap(self, value: bytes | None) -> tuple[str | None, int | None, list[str] | None, bytes | None]:
        if value is None or value == b"":
            return None, None, None, None  # the tombstone after a delete
        try:
            event = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            return None, None, None, value  # the inner decoder quarantines it with the reason
        if not isinstance(event, dict) or "op" not in event:
            return None, None, None, value
        op = event.get("op")
        src = event.get("source") or {}
        lsn = src.get("lsn") if isinstance(src.get("lsn"), int) else None
        if op == "d":
            return op, lsn, None, None  # a delete: `_deleted` by the key, like the tombstone
        if op == "t":
            return op, lsn, None, None
        row = event.get("after")
        if not isinstance(row, dict):
            return op, lsn, None, value  # quarantined: not a record
        unchanged = event.get("unchanged_toast") or None
        flat = {k: (json.dumps(v, separators=(",", ":"), ensure_ascii=False)
                    if isinstance(v, list | dict) and k in self._string_fields else v) for k, v in row.items()}
        return op, lsn, unchanged, json.dumps(flat, separators=(",", ":"), ensure_ascii=False).encode()

    # --- columns ----------------------------------------------------------------------------

    def _with_cdc_columns(self, inner: Decoded | None, meta: dict) -> tuple[pa.Table, pa.Array, pa.Table]:
        if inner is None:
            return self.schema.empty_table(), pa.array([], pa.int64()), QUARANTINE_SCHEMA.empty_table()
        rows = inner.valid
        offsets = rows.column("_offset").to_pylist()
        triples = [meta.get(o, (None, None, None)) for o in offsets]
        at = rows.schema.get_field_index("_topic")
        cols = {
            "_op": pa.array([t[0] for t in triples], pa.string()),
            "_lsn": pa.array([t[1] for t in triples], pa.int64()),
            "_unchanged": pa.array([t[2] for t in triples], pa.list_(pa.string())),
        }
        for k, f in enumerate(CDC_FIELDS):
            rows = rows.add_column(at + k, f.name, cols[f.name])
        for name in self._bytes_fields:  # JSON carried base64 text: back to the bytes
            i = rows.schema.get_field_index(name)
            decoded = [None if v is None else base64.b64decode(v) for v in rows.column(name).to_pylist()]
            rows = rows.set_column(i, name, pa.array(decoded, pa.binary()))
        return rows.cast(self.schema), inner.hours, inner.invalid

    def _truncate_rows(self, batch: Batch, idx: list[int]) -> tuple[pa.Table, pa.Array, pa.Table]:
        keep, dup = [], []
        attrs: list[dict[str, Any]] = []
        for i in idx:
            ce = {k[3:].lower(): v.decode() for k, v in (batch.headers[i] or []) if k.lower().startswith("ce_")}
            ce_id = ce.get("id")
            if self.inner.dedupe and ce_id in self.inner.seen:
                dup.append((i, ce_id))
                continue
            if self.inner.dedupe and ce_id:
                self.inner.seen[ce_id] = f"partition {batch.partition} offset {batch.offsets[i]}"
            keep.append(i)
            attrs.append(ce)
        n = len(keep)
        ts_type = pa.timestamp("us", tz="UTC")
        lsns = [(json.loads(batch.values[i]).get("source") or {}).get("lsn") for i in keep]
        columns: dict[str, pa.Array] = {f.name: pa.nulls(n, f.type) for f in self.schema}
        columns.update({
            "ce_id": pa.array([a.get("id") for a in attrs], pa.string()),
            "ce_source": pa.array([a.get("source") for a in attrs], pa.string()),
            "ce_type": pa.array([a.get("type") for a in attrs], pa.string()),
            "ce_time": pa.array([a.get("time") for a in attrs], pa.string()).cast(ts_type),
            "ce_subject": pa.array([a.get("subject") for a in attrs], pa.string()),
            "_op": pa.array(["t"] * n, pa.string()),
            "_lsn": pa.array(lsns, pa.int64()),
            "_topic": pa.array([self.inner.topic] * n, pa.string()),
            "_partition": pa.array([batch.partition] * n, pa.int32()),
            "_offset": pa.array([batch.offsets[i] for i in keep], pa.int64()),
            "_timestamp": pa.array([batch.timestamps[i] for i in keep], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        })
        if "_deleted" in columns:
            columns["_deleted"] = pa.array([False] * n, pa.bool_())
        valid = pa.table(columns, schema=self.schema)
        hours = pc.divide(pc.cast(valid.column("_timestamp").combine_chunks(), pa.int64()), 3_600_000).cast(pa.int64())
        prov = [f.name for f in PROVENANCE]
        invalid = pa.table({
            "_topic": pa.array([self.inner.topic] * len(dup), pa.string()),
            "_partition": pa.array([batch.partition] * len(dup), pa.int32()),
            "_offset": pa.array([batch.offsets[i] for i, _ in dup], pa.int64()),
            "_timestamp": pa.array([batch.timestamps[i] for i, _ in dup], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "_key": pa.nulls(len(dup), pa.string()),
            "_error": pa.array([f"duplicate ce_id {c!r}; dropped by cloudevents.dedupe_on_id" for _, c in dup], pa.string()),
            "_raw": pa.array([batch.values[i] for i, _ in dup], pa.binary()),
        }, schema=QUARANTINE_SCHEMA)
        assert prov == invalid.column_names[:5]
        return valid, hours, invalid
