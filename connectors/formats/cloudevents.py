# Over 400 lines: the CloudEvents binding as written (binary and structured modes, attributes, ids) in one place.
"""CloudEvents over Kafka: building binary-mode events, and decoding both content modes.

A product with `format: cloudevents` receives CloudEvents 1.0 in either Kafka content mode:

- **binary**: the attributes are `ce_*` headers (`ce_specversion`, `ce_id`, `ce_source`,
  `ce_type`, `ce_time`, `ce_subject`, …, plus `content-type`), the value is the data. The
  data of a JSON event is exactly the product's record, so the values go through the JSON
  fast path of `connectors.formats.json.Decoder` as a batch, and the headers become columns with
  one dictionary lookup per message (no per-record JSON or SDK call). A binary event without
  data (null or empty value) is a **tombstone** for its Kafka key.
- **structured**: the whole event is a JSON object in the value (`content-type:
  application/cloudevents+json`, or no `ce_*` headers and a value that is such an object).
  Each one is parsed and validated by the CloudEvents SDK (`cloudevents.core.bindings.kafka
  .from_structured`), and its `data` joins the binary events' values on the fast path.

Both modes decode to the same rows: the product's fields, then `ce_id`, `ce_source`,
`ce_type`, `ce_time`, `ce_subject` (CE_FIELDS), then the provenance columns.

Malformed envelopes are quarantined with the reason: a required attribute missing or empty
(`id`, `source`, `type`, `specversion` — checked before the SDK, which would invent an id
and a time), a specversion other than 1.0, a `ce_time` that is not RFC 3339, structured mode
with invalid JSON or an SDK validation error, a value that is neither mode. Quarantined
binary events keep their envelope: `_raw` holds the event re-rendered in structured mode
(data inline when it is JSON, else `data_base64`), so the record is self-contained.

`event_time.source: ce_time` takes the hour from `ce_time` (fallback `kafka_timestamp`
when the spec says so, else a missing `ce_time` is quarantined).

De-duplication on `ce_id` (`cloudevents.dedupe_on_id: true`), scope guaranteed: a `ce_id`
lands at most once **per product across runs**, as long as its copies are in the same Kafka
partition (the source connector keys events by row key, so they are) or in one run, and the
earlier copy's hour is within `cloudevents.dedupe_lookback` (default 7 days) of the newest
hour landed. `landing.land` seeds the decoder with the `ce_id`s of the product's live files in
that window (`seen_ids_from_lake` in connectors/flows/landing.py), and a partition is landed by one run at a time, so every
run sees the ids its predecessors committed. A duplicate is quarantined with reason
`duplicate ce_id … (first seen …)`, so consumed = landed + quarantined still holds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors.formats.base import Batch, Decoded
from connectors.formats.json import Decoder
from connectors.formats.schema import CE_FIELDS, QUARANTINE_SCHEMA, lake_schema
from connectors.spec import DataProductSpec

SPECVERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
JSON_CONTENT_TYPE = "application/json"
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
CE_COLUMNS = [f.name for f in CE_FIELDS]  # ce_id, ce_source, ce_type, ce_time, ce_subject
_PROMOTED = ("id", "source", "type", "time", "subject")
DEFAULT_DEDUPE_LOOKBACK = timedelta(days=7)


# --- producing --------------------------------------------------------------------------------


def cloudevent_id(table: str, key: Any, version: Any) -> str:
    """Deterministic id of one version of one row: `<table>:<key>:<version>`.

    The same row version published twice (a retry, a restart before the cursor was stored)
    gets the same id, which is what consumers de-duplicate on. A composite key is rendered as
    compact JSON, a timestamp version as RFC 3339 UTC with microseconds.
    """
    return f"{table}:{_text(key)}:{_text(version)}"


def _text(v: Any) -> str:
    if isinstance(v, datetime):
        return rfc3339(v)
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, separators=(",", ":"), sort_keys=True, default=json_default)
    return str(v)


def rfc3339(ts: datetime) -> str:
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_default(v: Any) -> Any:
    """JSON for values a SQL row holds: timestamps as RFC 3339, decimals as numbers, bytes as text."""
    if isinstance(v, datetime):
        return rfc3339(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v) if v != v.to_integral_value() else int(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(v)).decode("ascii")
    raise TypeError(f"cannot render {type(v).__name__} as JSON")


def binary_headers(
    *, id: str, source: str, type: str, time: datetime | None = None, subject: str | None = None,
    content_type: str = JSON_CONTENT_TYPE, extensions: Mapping[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    """Kafka headers of a binary-mode CloudEvent 1.0 (attribute names as the spec's Kafka binding)."""
    headers = [
        ("ce_specversion", SPECVERSION.encode()),
        ("ce_id", id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", type.encode()),
    ]
    if time is not None:
        headers.append(("ce_time", rfc3339(time).encode()))
    if subject is not None:
        headers.append(("ce_subject", subject.encode()))
    for name, value in (extensions or {}).items():
        headers.append((f"ce_{name}", str(value).encode()))
    headers.append(("content-type", content_type.encode()))
    return headers


def to_structured_value(attributes: Mapping[str, Any], data: bytes | None) -> bytes:
    """A structured-mode JSON event from attributes and raw data bytes (inline when JSON)."""
    event: dict[str, Any] = {k: (rfc3339(v) if isinstance(v, datetime) else v) for k, v in attributes.items()}
    if data:
        try:
            event["data"] = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            event["data_base64"] = base64.b64encode(data).decode("ascii")
    return json.dumps(event, separators=(",", ":")).encode()


# --- decoding ----------------------------------------------------------------------------------


@dataclass
class _Envelope:
    """Per message of a batch: the payload for the fast path, the attributes, or why not."""

    payload: list[bytes | None]
    attrs: dict[str, list[str | None]]  # id, source, type, time, subject → per message
    raw: list[bytes | None]  # what a quarantine row keeps
    reasons: list[str | None]


class CloudEventsDecoder:
    """Decodes batches of a `format: cloudevents` product; build once per run.

    `seen_ids`: `ce_id`s landed before (see `connectors.flows.landing.seen_ids_from_lake`), for de-duplication across
    runs; ids landed by this decoder are added as it goes.
    """

    needs_headers = True

    def __init__(self, spec: DataProductSpec, topic: str | None = None, seen_ids: Iterable[str] = ()):
        if spec.format != "cloudevents":
            raise ValueError(f"{spec.name}: CloudEventsDecoder needs format: cloudevents")
        self.spec = spec
        self.topic = topic or spec.topic
        self.inner = Decoder(spec, self.topic)
        self.schema = lake_schema(spec)
        self.dedupe = spec.cloudevents.dedupe_on_id
        self.seen: dict[str, str] = {i: "an earlier run" for i in seen_ids} if self.dedupe else {}

    def decode(self, batch: Batch, attributes: list[dict[str, str]] | None = None) -> Decoded:
        """`attributes`: each message's binary-mode attributes already read (names without `ce_`,
        `datacontenttype` for the content type) — what the inbound endpoint has parsed from HTTP —
        so the headers are not read again; the same checks apply as to `ce_*` headers."""
        env = self._envelopes(batch) if attributes is None else self._parsed_envelopes(batch, attributes)
        n = len(batch)
        ok = [i for i in range(n) if env.reasons[i] is None]
        sub = Batch(
            partition=batch.partition,
            values=[env.payload[i] for i in ok],
            keys=[batch.keys[i] for i in ok],
            offsets=[batch.offsets[i] for i in ok],
            timestamps=[batch.timestamps[i] for i in ok],
        )
        inner = self.inner.decode(sub) if ok else None

        # Promote the attributes of the rows that decoded, found by their offset.
        if inner is not None and inner.valid.num_rows:
            pos = pc.index_in(inner.valid.column("_offset"), value_set=pa.array(sub.offsets, pa.int64()))
            rows = inner.valid
            ce_time, bad_time = self._times([env.attrs["time"][i] for i in ok], pos)
            columns = {
                "ce_id": pc.take(pa.array([env.attrs["id"][i] for i in ok], pa.string()), pos),
                "ce_source": pc.take(pa.array([env.attrs["source"][i] for i in ok], pa.string()), pos),
                "ce_type": pc.take(pa.array([env.attrs["type"][i] for i in ok], pa.string()), pos),
                "ce_time": ce_time,
                "ce_subject": pc.take(pa.array([env.attrs["subject"][i] for i in ok], pa.string()), pos),
            }
            at = len(self.spec.fields)
            for k, name in enumerate(CE_COLUMNS):
                rows = rows.add_column(at + k, name, columns[name])
            rows = rows.cast(self.schema)
            hours = inner.hours
            reject = bad_time
            reason = pc.if_else(bad_time, pa.scalar("ce_time is not an RFC 3339 timestamp"), pa.scalar(None, pa.string()))
            if self.spec.event_time.source == "ce_time":
                hours, no_time = self._ce_hours(rows, hours)
                reject = pc.or_(reject, no_time)
                reason = pc.coalesce(reason, pc.if_else(no_time, pa.scalar(
                    "no event time: ce_time is missing and event_time.fallback is 'none'"), pa.scalar(None, pa.string())))
            if self.dedupe:
                dup = self._duplicates(rows, reject, batch.partition)
                if dup is not None:
                    reject = pc.or_(reject, pc.is_valid(dup))
                    reason = pc.coalesce(reason, dup)
            if pc.any(reject).as_py():
                keep = pc.invert(reject)
                rejected_rows = rows.filter(reject)
                extra_invalid = self._quarantine_rows(rejected_rows, reason.filter(reject), batch, env)
                rows, hours = rows.filter(keep), hours.filter(keep)
            else:
                extra_invalid = None
            valid = rows
        else:
            valid, hours, extra_invalid = self.schema.empty_table(), pa.array([], pa.int64()), None

        invalid_parts = [self._envelope_failures(batch, env)]
        if inner is not None and inner.invalid.num_rows:
            invalid_parts.append(self._restore_raw(inner.invalid, batch, env))
        if extra_invalid is not None:
            invalid_parts.append(extra_invalid)
        invalid_parts = [t for t in invalid_parts if t.num_rows]
        if not invalid_parts:
            invalid = QUARANTINE_SCHEMA.empty_table()
        else:
            invalid = pa.concat_tables(invalid_parts)
            invalid = invalid.take(pc.sort_indices(invalid.column("_offset")))
        return Decoded(valid=valid, hours=hours, invalid=invalid)

    # --- envelopes ------------------------------------------------------------------------

    def _envelopes(self, batch: Batch) -> _Envelope:
        n = len(batch)
        payload: list[bytes | None] = [None] * n
        raw: list[bytes | None] = list(batch.values)
        reasons: list[str | None] = [None] * n
        attrs: dict[str, list[str | None]] = {a: [None] * n for a in _PROMOTED}
        headers_of = batch.headers or [None] * n
        for i in range(n):
            hdrs = headers_of[i]
            value = batch.values[i]
            ce = None
            content_type = None
            if hdrs:
                for name, v in hdrs:
                    lname = name.lower()
                    if lname.startswith("ce_"):
                        if ce is None:
                            ce = {}
                        ce[lname[3:]] = v.decode("utf-8", "replace") if v is not None else None
                    elif lname == "content-type" and v is not None:
                        content_type = v.decode("utf-8", "replace")
            if ce is not None:  # binary mode
                _binary_envelope(i, ce, content_type, value, payload, attrs, raw, reasons)
                continue
            # structured mode (declared, or a value that looks like an event object)
            if value is None or value == b"":
                reasons[i] = "not a CloudEvent: no ce_* headers and no value (a tombstone needs binary mode)"
                continue
            if content_type is not None and not content_type.startswith(STRUCTURED_CONTENT_TYPE) and not _is_json(content_type):
                reasons[i] = f"not a CloudEvent: no ce_* headers and content-type {content_type[:60]!r}"
                continue
            parsed, problem = _structured(value, batch.keys[i])
            if problem is not None:
                reasons[i] = f"malformed CloudEvent (structured mode): {problem}"
                continue
            attributes, data = parsed
            for a in _PROMOTED:
                v = attributes.get(a)
                attrs[a][i] = v if v is None or isinstance(v, str) else (rfc3339(v) if isinstance(v, datetime) else str(v))
            payload[i] = data
        return _Envelope(payload, attrs, raw, reasons)

    @staticmethod
    def _parsed_envelopes(batch: Batch, attributes: list[dict[str, str]]) -> _Envelope:
        n = len(batch)
        payload: list[bytes | None] = [None] * n
        raw: list[bytes | None] = list(batch.values)
        reasons: list[str | None] = [None] * n
        attrs: dict[str, list[str | None]] = {a: [None] * n for a in _PROMOTED}
        for i in range(n):
            ce = attributes[i]
            _binary_envelope(i, ce, ce.get("datacontenttype"), batch.values[i], payload, attrs, raw, reasons)
        return _Envelope(payload, attrs, raw, reasons)

    def _envelope_failures(self, batch: Batch, env: _Envelope) -> pa.Table:
        idx = [i for i, r in enumerate(env.reasons) if r is not None]
        if not idx:
            return QUARANTINE_SCHEMA.empty_table()
        prov = self.inner._provenance(batch)
        take = pa.array(idx, pa.int64())
        return pa.table(
            {name: pc.take(prov[name], take) for name in ("_topic", "_partition", "_offset", "_timestamp", "_key")}
            | {"_error": pa.array([env.reasons[i] for i in idx], pa.string()),
               "_raw": pa.array([env.raw[i] for i in idx], pa.binary())},
            schema=QUARANTINE_SCHEMA,
        )

    def _restore_raw(self, invalid: pa.Table, batch: Batch, env: _Envelope) -> pa.Table:
        """The inner decoder saw only the data: put the whole envelope back into `_raw`."""
        pos = pc.index_in(invalid.column("_offset"), value_set=pa.array(batch.offsets, pa.int64())).to_pylist()
        raws = []
        for i in pos:
            if batch.headers and batch.headers[i] and any(h[0].lower().startswith("ce_") for h in batch.headers[i]):
                ce = {h[0][3:].lower(): h[1].decode("utf-8", "replace") for h in batch.headers[i]
                      if h[0].lower().startswith("ce_") and h[1] is not None}
                raws.append(to_structured_value(ce, batch.values[i]))
            else:
                raws.append(batch.values[i])
        return invalid.set_column(invalid.schema.get_field_index("_raw"), "_raw", pa.array(raws, pa.binary()))

    def _quarantine_rows(self, rows: pa.Table, reasons: pa.Array, batch: Batch, env: _Envelope) -> pa.Table:
        table = pa.table(
            {name: rows.column(name) for name in ("_topic", "_partition", "_offset", "_timestamp", "_key")}
            | {"_error": reasons, "_raw": pa.nulls(rows.num_rows, pa.binary())},
            schema=QUARANTINE_SCHEMA,
        )
        return self._restore_raw(table, batch, env)

    # --- attributes as columns ------------------------------------------------------------

    @staticmethod
    def _times(values: list[str | None], pos: pa.Array) -> tuple[pa.Array, pa.Array]:
        """ce_time strings → timestamp[us, UTC] (vectorized), and a mask of unparseable ones."""
        strings = pc.take(pa.array(values, pa.string()), pos)
        ts_type = pa.timestamp("us", tz="UTC")
        try:
            return strings.cast(ts_type), pa.repeat(pa.scalar(False), len(strings))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out, bad = [], []
            for s in strings.to_pylist():
                try:
                    out.append(None if s is None else pa.scalar(s).cast(ts_type).as_py())
                    bad.append(False)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    out.append(None)
                    bad.append(True)
            return pa.array(out, ts_type), pa.array(bad, pa.bool_())

    def _ce_hours(self, rows: pa.Table, kafka_hours: pa.Array) -> tuple[pa.Array, pa.Array]:
        micros = pc.cast(rows.column("ce_time").combine_chunks(), pa.int64())
        hours = pc.floor(pc.divide(pc.cast(micros, pa.float64()), 3_600_000_000.0)).cast(pa.int64())
        if self.spec.event_time.fallback == "kafka_timestamp":
            return pc.coalesce(hours, kafka_hours), pa.repeat(pa.scalar(False), len(hours))
        if self.spec.deletes_enabled:  # a tombstone without ce_time: when it was written
            deleted = pc.fill_null(rows.column("_deleted").combine_chunks(), False)
            hours = pc.if_else(pc.and_(deleted, pc.is_null(hours)), kafka_hours, hours)
        return hours, pc.is_null(hours)

    def _duplicates(self, rows: pa.Table, rejected: pa.Array, partition: int) -> pa.Array | None:
        """Per row: 'duplicate ce_id …' when its id landed before (this run or the lake), else null."""
        ids = rows.column("ce_id").to_pylist()
        offsets = rows.column("_offset").to_pylist()
        rejected_list = rejected.to_pylist()
        out: list[str | None] = []
        any_dup = False
        for ce_id, offset, rej in zip(ids, offsets, rejected_list, strict=True):
            if rej or ce_id is None:
                out.append(None)
                continue
            first = self.seen.get(ce_id)
            if first is not None:
                out.append(f"duplicate ce_id {ce_id[:120]!r} (first seen in {first}); dropped by cloudevents.dedupe_on_id")
                any_dup = True
            else:
                self.seen[ce_id] = f"partition {partition} offset {offset}"
                out.append(None)
        return pa.array(out, pa.string()) if any_dup else None


def _binary_envelope(i: int, ce: Mapping[str, str | None], content_type: str | None, value: bytes | None,
                     payload: list, attrs: dict[str, list], raw: list, reasons: list) -> None:
    """Message i in binary mode: its attributes `ce`, checked, into the envelope's lists."""
    problem = _missing(ce)
    if problem is None and ce["specversion"] != SPECVERSION:
        problem = f"unsupported CloudEvents specversion {ce['specversion'][:20]!r} (expected {SPECVERSION})"
    if problem is None and content_type and not _is_json(content_type):
        problem = f"binary event data has content-type {content_type[:60]!r}; this product reads JSON data"
    if problem is not None:
        reasons[i] = f"malformed CloudEvent (binary mode): {problem}"
        raw[i] = to_structured_value({**ce, **({"datacontenttype": content_type} if content_type else {})}, value)
        return
    for a in _PROMOTED:
        attrs[a][i] = ce.get(a)
    payload[i] = value if value else None  # no data: a tombstone for the key


def _missing(attrs: Mapping[str, str | None]) -> str | None:
    absent = [a for a in REQUIRED_ATTRIBUTES if not attrs.get(a)]
    if absent:
        return "missing required attribute(s) " + ", ".join(absent)
    return None


def _is_json(content_type: str) -> bool:
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct == JSON_CONTENT_TYPE or ct.endswith("+json") and ct != STRUCTURED_CONTENT_TYPE or ct == "text/json"


def _structured(value: bytes, key: bytes | None) -> tuple[tuple[dict, bytes | None] | None, str | None]:
    """Parse and validate one structured-mode event with the SDK; (attributes, data JSON bytes)."""
    from cloudevents.core.bindings.kafka import KafkaMessage, from_structured
    from cloudevents.core.formats.json import JSONFormat

    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"invalid JSON: {exc}"[:300]
    if not isinstance(obj, dict):
        return None, "the value is not a JSON object"
    problem = _missing({k: (v if isinstance(v, str) else (str(v) if v is not None else None)) for k, v in obj.items()})
    if problem is not None:
        return None, problem
    if obj.get("specversion") != SPECVERSION:
        return None, f"unsupported CloudEvents specversion {str(obj.get('specversion'))[:20]!r} (expected {SPECVERSION})"
    try:
        event = from_structured(KafkaMessage(headers={}, key=None, value=value), JSONFormat())
    except Exception as exc:  # noqa: BLE001 - the SDK raises several types; the reason is what matters
        text = " ".join(str(exc).split())
        return None, f"{type(exc).__name__}: {text}"[:300]
    attributes = event.get_attributes()
    if "data" in obj:
        data = obj["data"]
        payload = None if data is None else json.dumps(data, separators=(",", ":")).encode()
    elif "data_base64" in obj:
        payload = base64.b64decode(obj["data_base64"]) or None
    else:
        payload = None
    if isinstance(obj.get("time"), str):  # the SDK invents a time when there is none: keep the event's
        attributes["time"] = obj["time"]
    else:
        attributes.pop("time", None)
    return (attributes, payload), None
