"""Kafka records of a product as CloudEvents, and CloudEvents as HTTP requests.

Each record becomes an event with a stable `id` (`<product>-<partition>-<offset>`, the same on
every retry and after any crash, so it is also the Standard Webhooks `webhook-id`), the
product's `source` and `type`, `time` from the product's event-time field, `subject` and
`partitionkey` from the Kafka key, `sequence` (the offset, zero-padded to 20 digits so it
orders as a string) and `flowpartition` (the Kafka partition: a receiver detects a gap per
(flowpartition, sequence)), plus the extension attributes the product's `flow.attributes` maps.

Every format may allow flow: `data` is always the product's record as JSON. A `format: json`
product's events carry the value as produced; an avro, protobuf or cloudevents product's (CDC's
Debezium-shaped ones included) carry the decoded record rendered with the spec's types
(`record_json`): the spec's fields in their order, nulls left out, decimals as plain decimal
text (docs/formats.md), timestamps ISO-8601 in UTC, dates ISO, bytes base64 — what the
product's JSON Schema at `dataschema` describes. A change event also says which change it is in the
`flowop` extension (Debezium's op: c, u, d, r, t); a tombstone (no value) is no event.
`dataschema` is the product's schema in the gateway's xRegistry (`schema_url`), set when the
gateway knows its public URL (FLOWSUITE_FLOW_PUBLIC_URL).

HTTP encodings (cloudevents/bindings/http-protocol-binding.md): binary mode (`ce-*` headers,
the record's JSON as the body), structured (`application/cloudevents+json`) and batched
(`application/cloudevents-batch+json`, only when the subscription asks for it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from connectors.spec import DataProductSpec

SPECVERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def product_source(spec: DataProductSpec) -> str:
    return f"/flowsuite/products/{spec.name}"


def product_type(spec: DataProductSpec) -> str:
    return spec.flow.type or f"com.flowsuite.{spec.name}"


def schema_xid(spec: DataProductSpec) -> str:
    """The product's record schema in the gateway's xRegistry (connectors/gateway/xregistry.py)."""
    return f"/schemagroups/{spec.name}/schemas/{spec.name}"


def schema_url(public_url: str | None, spec: DataProductSpec) -> str | None:
    """The events' `dataschema`: the schema's absolute URL under the gateway's public URL, or
    None when the gateway does not know it (CloudEvents wants an absolute URI there)."""
    return public_url.rstrip("/") + schema_xid(spec) if public_url else None


def record_json(spec: DataProductSpec, valid) -> list[bytes]:
    """Each row of a decoded batch (the landing decoder's `valid` table) as the product's record
    in JSON: the spec's fields with the spec's types (decimals as plain text, never 1.5E-7;
    timestamps ISO-8601 UTC; dates ISO; bytes base64); a null field is left out."""
    import base64

    import pyarrow as pa
    import pyarrow.compute as pc

    columns: list[tuple[str, list]] = []
    for f in spec.fields:
        if f.name not in valid.column_names:
            continue
        col = valid.column(f.name)
        if pa.types.is_timestamp(col.type):
            if col.type.tz is None:
                col = pc.assume_timezone(col, "UTC")
            values = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ").to_pylist()  # µs: %S has the fraction
        elif pa.types.is_date(col.type):
            values = pc.strftime(col, format="%Y-%m-%d").to_pylist()
        elif pa.types.is_decimal(col.type):
            values = [None if v is None else format(v, "f") for v in col.to_pylist()]
        elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            values = [None if v is None else base64.b64encode(v).decode("ascii") for v in col.to_pylist()]
        else:
            values = col.to_pylist()
        columns.append((f.name, values))
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    # A null is left out, as a JSON writer leaves out an optional field: the schema at
    # `dataschema` types every field without null (connectors/gateway/xregistry.py json_schema).
    return [dumps({name: values[i] for name, values in columns if values[i] is not None}).encode()
            for i in range(valid.num_rows)]


@dataclass(frozen=True)
class FlowEvent:
    partition: int
    offset: int
    attributes: dict[str, str]  # context attributes and extensions, all strings
    data: bytes  # the record's JSON value, as produced
    time_ms: int | None  # event time, for startfrom time

    @property
    def id(self) -> str:
        return self.attributes["id"]


def _event_time(value: Any) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):  # plain digits: str() would give 1.5E-7 or 0E-9
        return format(value, "f")
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)


def to_event(spec: DataProductSpec, partition: int, offset: int, key: bytes | None, value: bytes | None, kafka_ts_ms: int | None) -> FlowEvent | None:
    """The record as a CloudEvent, or None when it is not a JSON object (landing quarantines
    those; the gateway cannot evaluate filters or policy on them, so never sends them)."""
    if not value:
        return None
    try:
        record = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    attrs = {
        "specversion": SPECVERSION,
        "id": f"{spec.name}-{partition}-{offset}",
        "source": product_source(spec),
        "type": product_type(spec),
        "datacontenttype": "application/json",
        "sequence": f"{offset:020d}",
        "flowpartition": str(partition),
    }
    when = _event_time(record.get(spec.event_time.field)) if spec.event_time.field else None
    if when is None and kafka_ts_ms and spec.event_time.source != "field":
        when = datetime.fromtimestamp(kafka_ts_ms / 1000, tz=UTC)
    if when is not None:
        attrs["time"] = when.isoformat().replace("+00:00", "Z")
    if key:
        k = key.decode("utf-8", "replace")
        attrs["subject"] = k
        attrs["partitionkey"] = k
    for field_name, attr in spec.flow.attributes.items():
        text = _text(record.get(field_name))
        if text is not None:
            attrs[attr] = text
    return FlowEvent(partition, offset, attrs, bytes(value), int(when.timestamp() * 1000) if when else None)


def events_from_batch(spec: DataProductSpec, partition: int, messages: dict[int, Any], valid,
                      dataschema: str | None = None) -> list[FlowEvent]:
    """The valid rows of a decoded read (the landing decoder's `valid` table) as events, built
    column by column from what the decoder already parsed; `messages` maps offset → message,
    whose original value bytes are the data of a json product (the others' is `record_json`).
    `dataschema`: the schema URL every event names (`schema_url`), None for none."""
    n = valid.num_rows
    if n == 0:
        return []
    offsets = valid.column("_offset").to_pylist()
    rendered = record_json(spec, valid) if spec.format != "json" else None
    ops = valid.column("_op").to_pylist() if "_op" in valid.column_names else None
    source, etype = product_source(spec), product_type(spec)
    attr_columns = [(attr, valid.column(f).to_pylist()) for f, attr in spec.flow.attributes.items() if f in valid.column_names]
    times: list[int | None] = [None] * n
    texts: list[str | None] = [None] * n
    time_field = spec.event_time.field
    if time_field and time_field in valid.column_names:
        import pyarrow as pa
        import pyarrow.compute as pc

        col = valid.column(time_field)
        if pa.types.is_timestamp(col.type):
            times = pc.divide(pc.cast(col, pa.int64()), 1000).to_pylist()  # µs → ms
            texts = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ").to_pylist()  # RFC 3339, µs
        else:
            times = col.to_pylist()
    base = {"specversion": SPECVERSION, "id": "", "source": source, "type": etype,
            "datacontenttype": "application/json", "sequence": "", "flowpartition": str(partition)}
    if dataschema:
        base["dataschema"] = dataschema
    prefix = f"{spec.name}-{partition}-"
    out = []
    for i, offset in enumerate(offsets):
        m = messages[offset]
        if m.value() is None:
            continue  # a tombstone (a compaction marker after a delete) has no record to send
        attrs = dict(base)
        attrs["id"] = prefix + str(offset)
        attrs["sequence"] = f"{offset:020d}"
        t = times[i]
        if t is None and spec.event_time.source != "field":
            t = m.timestamp()[1]
        if texts[i] is not None:
            attrs["time"] = texts[i]
        elif t is not None:
            attrs["time"] = datetime.fromtimestamp(t / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        key = m.key()
        if key:
            k = key.decode("utf-8", "replace")
            attrs["subject"] = attrs["partitionkey"] = k
        for attr, values in attr_columns:
            v = values[i]
            if v is not None:
                attrs[attr] = v if isinstance(v, str) else _text(v)
        if ops is not None and ops[i] is not None:
            attrs["flowop"] = ops[i]
        out.append(FlowEvent(partition, offset, attrs, m.value() if rendered is None else rendered[i], t))
    return out


def _header_value(value: str) -> str:
    """Percent-encode what an HTTP header cannot carry as is (binding §3.1.3.2)."""
    out = []
    for ch in value:
        code = ord(ch)
        if ch in ('"', "%") or code < 0x20 or code > 0x7E:
            out.extend(f"%{b:02X}" for b in ch.encode())
        else:
            out.append(ch)
    return "".join(out)


def binary_request(event: FlowEvent) -> tuple[dict[str, str], bytes]:
    headers = {f"ce-{k}": _header_value(v) for k, v in event.attributes.items() if k != "datacontenttype"}
    headers["content-type"] = event.attributes.get("datacontenttype", "application/json")
    return headers, event.data


def _structured(event: FlowEvent) -> bytes:
    head = json.dumps(event.attributes, separators=(",", ":"))
    return head[:-1].encode() + b',"data":' + event.data + b"}"


def structured_request(event: FlowEvent) -> tuple[dict[str, str], bytes]:
    return {"content-type": STRUCTURED}, _structured(event)


def batch_request(events: list[FlowEvent]) -> tuple[dict[str, str], bytes]:
    return {"content-type": BATCH}, b"[" + b",".join(_structured(e) for e in events) + b"]"
