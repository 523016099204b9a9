"""An HTTP request as CloudEvents, as the HTTP protocol binding reads it
(cloudevents/bindings/http-protocol-binding.md §3), and the envelope checks of CloudEvents 1.0.

The mode comes from `Content-Type` (§3): `application/cloudevents-batch+json` is batched,
`application/cloudevents+json` structured, any other media type binary (the `ce-*` headers are
the attributes, `Content-Type` is `datacontenttype`, the body is the data). A CloudEvents
format other than JSON is answered 415 (not understood). Binary header values are unquoted
(RFC 7230 quoted strings) and percent-decoded once, rejecting invalid UTF-8 (§3.1.3.2).

Every event becomes `InboundEvent(attributes, data)`: attributes as canonical strings, data as
bytes (JSON data re-serialised compactly, `data_base64` decoded), which is exactly what a
binary-mode Kafka record carries.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.errors import TerminalError

SPECVERSION = "1.0"
STRUCTURED = "application/cloudevents"
BATCH = "application/cloudevents-batch"
REQUIRED = ("specversion", "id", "source", "type")
ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]{1,64}\Z")  # lower-case letters and digits (SHOULD be ≤ 20)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class InboundEvent:
    attributes: dict[str, str]  # context attributes and extensions, canonical strings
    data: bytes | None

    @property
    def id(self) -> str | None:
        return self.attributes.get("id")


@dataclass(frozen=True)
class EventProblem:
    index: int
    id: str | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "reason": self.reason}


class RequestRefused(TerminalError, ValueError):
    """The request as a whole cannot be taken: the HTTP status, a message, the events at fault."""

    def __init__(self, status: int, message: str, events: list[EventProblem] | None = None):
        self.status, self.events = status, events or []
        super().__init__(message)  # FlowsuiteError.message reads it back


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_request(headers: dict[str, str], body: bytes) -> tuple[str, list[InboundEvent]]:
    """(mode, events) of a request; `headers` has lower-case names. Raises RequestRefused."""
    ctype = media_type(headers.get("content-type"))
    if not ctype:
        raise RequestRefused(415, "Content-Type is required (CloudEvents HTTP Webhook §2.1)")
    if ctype.startswith(BATCH):
        if ctype != BATCH + "+json":
            raise RequestRefused(415, f"batched event format {ctype!r} is not understood; send {BATCH}+json")
        items = _json(body)
        if not isinstance(items, list):
            raise RequestRefused(400, f"a {BATCH}+json body is a JSON array of events")
        if not items:
            raise RequestRefused(400, "the batch holds no events")
        return "batched", [_structured(item, i) for i, item in enumerate(items)]
    if ctype.startswith(STRUCTURED):
        if ctype != STRUCTURED + "+json":
            raise RequestRefused(415, f"event format {ctype!r} is not understood; send {STRUCTURED}+json or binary mode")
        return "structured", [_structured(_json(body), 0)]
    return "binary", [_binary(headers, body)]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRefused(400, f"the body is not valid JSON: {str(exc)[:200]}") from None


def _binary(headers: dict[str, str], body: bytes) -> InboundEvent:
    if "ce-datacontenttype" in headers:
        raise RequestRefused(400, "binary mode: ce-datacontenttype must not be sent; Content-Type is the datacontenttype",
                             [EventProblem(0, None, "ce-datacontenttype header present")])
    attributes: dict[str, str] = {}
    for name, value in headers.items():
        if name.startswith("ce-"):
            try:
                attributes[name[3:]] = header_value(value)
            except ValueError as exc:
                raise RequestRefused(400, f"header {name}: {exc}", [EventProblem(0, None, f"{name}: {exc}")]) from None
    if not attributes:
        raise RequestRefused(400, "not a CloudEvent: no ce-* headers, and the Content-Type is neither "
                                  f"{STRUCTURED}+json nor {BATCH}+json")
    attributes["datacontenttype"] = headers["content-type"].strip()
    return InboundEvent(attributes, body or None)


def header_value(value: str) -> str:
    """A `ce-*` header value decoded: RFC 7230 quoted string unescaped, then one round of
    percent-decoding whose bytes must be valid UTF-8 (§3.1.3.2)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    raw = _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("utf-8"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("percent-encoded bytes that are not valid UTF-8") from None


def _canonical(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    return None  # floats, objects and arrays are no CloudEvents attribute type


def _structured(obj: Any, index: int) -> InboundEvent:
    if type(obj) is not dict:
        raise RequestRefused(400, f"event {index} is not a JSON object", [EventProblem(index, None, "not a JSON object")])
    # The parsed object is ours: it becomes the attributes once data is taken out of it. Every
    # attribute a sender sends is a string in practice; other types are fixed up (rare) below.
    has_data, has_base64 = "data" in obj, "data_base64" in obj
    value = obj.pop("data") if has_data else None
    encoded = obj.pop("data_base64") if has_base64 else None
    attributes: dict[str, str] = obj
    for v in obj.values():
        if type(v) is not str:
            attributes = _canonical_attributes(obj, index)
            break
    if has_data and has_base64:
        problem = EventProblem(index, attributes.get("id"), "both data and data_base64")
        raise RequestRefused(400, f"event {index}: {problem.reason}", [problem])
    data: bytes | None = None
    if encoded is not None:
        try:
            data = base64.b64decode(encoded, validate=True)
        except (ValueError, TypeError):
            problem = EventProblem(index, attributes.get("id"), "data_base64 is not base64")
            raise RequestRefused(400, f"event {index}: {problem.reason}", [problem]) from None
    elif value is not None:
        ctype = media_type(attributes.get("datacontenttype")) if type(value) is str else None  # none: JSON
        if ctype and not _is_json(ctype):
            data = value.encode("utf-8")
        else:
            data = _COMPACT(value).encode("utf-8")
    return InboundEvent(attributes, data)


def _is_json(ctype: str) -> bool:
    return ctype == "application/json" or ctype.endswith("+json") or ctype == "text/json"


def _canonical_attributes(obj: dict[str, Any], index: int) -> dict[str, str]:
    """The attributes as canonical strings: integers and booleans as text, nulls left out; a
    float, object or array is no CloudEvents attribute type (400)."""
    attributes: dict[str, str] = {}
    for name, value in obj.items():
        if value is None:
            continue
        text = value if type(value) is str else _canonical(value)
        if text is None:
            problem = EventProblem(index, _canonical(obj.get("id")), f"attribute {name!r} is a {type(value).__name__}, "
                                   "not a CloudEvents attribute type (string, integer, boolean)")
            raise RequestRefused(400, f"event {index}: {problem.reason}", [problem])
        attributes[name] = text
    return attributes


def envelope_problems(events: list[InboundEvent]) -> list[EventProblem]:
    """What makes an event no CloudEvent 1.0: a required attribute missing or empty, another
    specversion, an attribute name outside [a-z0-9], a `time` that is not RFC 3339. Each
    distinct attribute name of the request is matched once (a batch repeats the same dozen)."""
    problems = []
    good_names: set[str] = set()
    for i, event in enumerate(events):
        attrs = event.attributes
        if not (attrs.get("specversion") and attrs.get("id") and attrs.get("source") and attrs.get("type")):
            absent = [a for a in REQUIRED if not attrs.get(a)]
            problems.append(EventProblem(i, attrs.get("id"), "missing required attribute(s) " + ", ".join(absent)))
            continue
        if attrs["specversion"] != SPECVERSION:
            problems.append(EventProblem(i, attrs["id"], f"specversion {attrs['specversion'][:20]!r} (expected {SPECVERSION})"))
            continue
        if not good_names.issuperset(attrs):
            bad = sorted(n for n in attrs if not ATTRIBUTE_NAME.match(n))
            if bad:
                problems.append(EventProblem(i, attrs["id"], f"attribute name(s) {', '.join(repr(b[:40]) for b in bad)} "
                                             "must be lower-case letters and digits"))
                continue
            good_names.update(attrs)
        if "time" in attrs and not _rfc3339(attrs["time"]):
            problems.append(EventProblem(i, attrs["id"], f"time {attrs['time'][:40]!r} is not an RFC 3339 timestamp"))
    return problems


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")


def _rfc3339(text: str) -> bool:
    if not _RFC3339.match(text):
        return False
    try:
        datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
