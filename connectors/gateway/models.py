"""The Subscriptions API's requests as typed models: what a subscriber may send, parsed once.

`SubscriptionRequest` is a CloudEvents subscription (subscriptions/spec.md §3.2) as flowsuite
accepts it: `source`, `protocol: HTTP`, `sink`, `types`, `filters` (filters.py's dialects and
messages), `config` (`SubscriptionOptions`) and `protocolsettings` (`ProtocolSettings`). The
OpenAPI says `config` is a map of strings, so every config value may arrive as a string:
`"true"` and `true`, `"8"` and `8` mean the same.

`SubscriptionOptions` is also how the engine reads a stored subscription (`Subscription.options`),
so no part of the gateway parses the config dict again. A request is validated with
`parse_request(body, now=...)`: `now` adds the checks that only make sense for a new request
(a `startfrom` time in the future is refused); a stored body is parsed without it.

Every problem is a `RequestError` whose message names the field (`config.maxbatch: …`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connectors.errors import TerminalError
from connectors.gateway.filters import FilterError, validate_filters
from connectors.gateway.startfrom import StartFromError, parse_startfrom
from connectors.spec import parse_duration

MODES = ("binary", "structured", "batched")
MAX_BATCH = 1000  # events per batched request a subscriber may ask for
MAX_IN_FLIGHT = 64  # requests in flight per partition when ordered is false
MAX_RATE = 1_000_000  # requests per minute a subscriber may ask for (the owner may cap it lower)
DEFAULT_BATCH = 100  # events per request in batched mode without maxbatch
DEFAULT_IN_FLIGHT = 8  # requests in flight per partition, ordered false without maxinflight
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}\Z")
FORBIDDEN_HEADER = re.compile(r"^(ce-|webhook-|content-|host$|connection$|transfer-encoding$)", re.IGNORECASE)
MAX_HEADERS = 20

REQUEST_FIELDS = ("source", "types", "config", "filters", "sink", "protocol", "protocolsettings")
CONFIG_KEYS = ("delivery", "lockduration", "maxbatch", "maxdeliverycount", "maxinflight", "mode", "ordered", "rate",
               "startfrom", "ttl")
DEFAULT_LOCK_S = 60  # pull delivery: seconds a received event stays locked to its receiver (Event Grid's default)
MAX_LOCK_S = 300  # and at most (Event Grid's maximum)
DEFAULT_MAX_DELIVERIES = 10  # pull: deliveries without acknowledge before the dead letter (Event Grid's default)
MAX_DELIVERIES = 10  # and at most (Event Grid's range is 1-10)


class RequestError(TerminalError, ValueError):
    """A subscription request outside what the API accepts; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _integer(value: Any, where: str, top: int, unit: str = "") -> int:
    """An integer from 1 to `top`, given as a number or as a string of digits (not a bool)."""
    n: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        n = int(value.strip())
    if n is None or not 1 <= n <= top:
        raise ValueError(f"{where} must be an integer from 1 to {top}{unit}, got {value!r}")
    return n


class SubscriptionOptions(_Model):
    """`config` of a subscription, typed: how the gateway delivers to it.

    Fields hold what the subscriber asked for (None: not given); the properties are what
    delivery uses, with the defaults filled in.
    """

    mode: Literal["binary", "structured", "batched"] = "binary"
    ordered: bool = True
    maxbatch: int | None = None
    maxinflight: int | None = None
    ttl: timedelta | None = None
    startfrom: Literal["latest", "earliest"] | dict[int, int] | datetime = "latest"
    rate: int | None = None  # requests per minute; the owner's flow.max_rate caps it
    delivery: Literal["push", "pull"] = "push"
    lockduration: int | None = None  # pull: seconds a received event is locked (default 60, at most 300)
    maxdeliverycount: int | None = None  # pull: deliveries before the dead letter (default 10, at most 10)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError("config must be an object (a map of option name to value)")
        unknown = sorted(str(k) for k in set(data) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"config keys not supported: {', '.join(unknown)} (supported: {', '.join(CONFIG_KEYS)})")
        return {k: v for k, v in data.items() if v is not None}

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: Any) -> Any:
        if v not in MODES:
            raise ValueError(f"config.mode must be one of {', '.join(MODES)}, got {v!r}")
        return v

    @field_validator("ordered", mode="before")
    @classmethod
    def _ordered(cls, v: Any) -> bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
        raise ValueError(f"config.ordered must be true or false, got {v!r}")

    @field_validator("maxbatch", mode="before")
    @classmethod
    def _maxbatch(cls, v: Any) -> int:
        return _integer(v, "config.maxbatch", MAX_BATCH)

    @field_validator("maxinflight", mode="before")
    @classmethod
    def _maxinflight(cls, v: Any) -> int:
        return _integer(v, "config.maxinflight", MAX_IN_FLIGHT)

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> int:
        return _integer(v, "config.rate", MAX_RATE, " (requests per minute)")

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, v: Any) -> timedelta:
        try:
            return parse_duration(v)
        except ValueError as exc:
            raise ValueError(f"config.ttl: {exc}") from None

    @field_validator("startfrom", mode="before")
    @classmethod
    def _startfrom(cls, v: Any, info: ValidationInfo) -> Any:
        now = (info.context or {}).get("now")
        try:
            return parse_startfrom(v, now=now)
        except StartFromError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("delivery", mode="before")
    @classmethod
    def _delivery(cls, v: Any) -> str:
        if v in ("push", "pull"):
            return v
        raise ValueError(f"config.delivery must be push (the gateway sends to the sink) or pull "
                         f"(the subscriber receives with POST /subscriptions/{{id}}:receive), got {v!r}")

    @field_validator("lockduration", mode="before")
    @classmethod
    def _lockduration(cls, v: Any) -> int:
        return _integer(v, "config.lockduration", MAX_LOCK_S, " (seconds)")

    @field_validator("maxdeliverycount", mode="before")
    @classmethod
    def _maxdeliverycount(cls, v: Any) -> int:
        return _integer(v, "config.maxdeliverycount", MAX_DELIVERIES, " (deliveries)")

    @model_validator(mode="after")
    def _pull_only(self) -> SubscriptionOptions:
        for name in ("lockduration", "maxdeliverycount"):
            if self.delivery == "push" and getattr(self, name) is not None:
                raise ValueError(f"config.{name} applies only to config.delivery: pull")
        return self

    # --- what delivery uses -----------------------------------------------------------------

    @property
    def events_per_request(self) -> int:
        """Events in one request: maxbatch (default 100) in batched mode, else one."""
        return (self.maxbatch or DEFAULT_BATCH) if self.mode == "batched" else 1

    @property
    def requests_in_flight(self) -> int:
        """Requests at once per partition: one when ordered, else maxinflight (default 8)."""
        return 1 if self.ordered else (self.maxinflight or DEFAULT_IN_FLIGHT)

    @property
    def lock_s(self) -> int:
        """Pull delivery: seconds a received event stays locked (lockduration, default 60)."""
        return self.lockduration or DEFAULT_LOCK_S

    @property
    def max_deliveries(self) -> int:
        """Pull delivery: deliveries without acknowledge after which an event goes to the dead letter."""
        return self.maxdeliverycount or DEFAULT_MAX_DELIVERIES

    def ttl_s(self, default_s: float) -> float:
        """How long an event is retried before the dead letter (the gateway's default if unset)."""
        return self.ttl.total_seconds() if self.ttl is not None else default_s


class ProtocolSettings(_Model):
    """`protocolsettings` of the HTTP protocol: the method and extra headers of each delivery."""

    headers: dict[str, str] = {}
    method: Literal["POST", "PUT"] = "POST"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if data is None:
            return {}
        if not isinstance(data, dict) or set(data) - {"headers", "method"}:
            raise ValueError("protocolsettings (HTTP) may carry only headers and method")
        return {k: v for k, v in data.items() if v is not None}

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:
        if v not in ("POST", "PUT"):
            raise ValueError(f"protocolsettings.method must be POST or PUT, got {v!r}")
        return v

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, v: Any) -> dict[str, str]:
        if not isinstance(v, dict) or len(v) > MAX_HEADERS:
            raise ValueError(f"protocolsettings.headers must be an object of at most {MAX_HEADERS} headers")
        for name, value in v.items():
            if not HEADER_NAME.match(str(name)) or FORBIDDEN_HEADER.match(str(name)):
                raise ValueError(f"protocolsettings.headers: {name!r} may not be set")
            if not isinstance(value, str) or len(value) > 4096 or any(c in value for c in "\r\n\0"):
                raise ValueError(f"protocolsettings.headers.{name}: a header value is a single-line string")
        return dict(v)


class SubscriptionRequest(_Model):
    """A subscription as a subscriber sends it (POST /subscriptions, PUT /subscriptions/{id}),
    without the fields the gateway sets (the service checks those before this model)."""

    source: str
    protocol: Literal["HTTP"]
    sink: str | None = None  # None only for pull delivery (config.delivery: pull)
    types: list[str] | None = None
    filters: list[dict[str, Any]] = []
    config: SubscriptionOptions = SubscriptionOptions()
    protocolsettings: ProtocolSettings = ProtocolSettings()

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("the request body must be a JSON object (a CloudEvents subscription)")
        if "sinkcredential" in data:
            raise ValueError("sinkcredential is not supported: put the sink's Authorization header in protocolsettings.headers")
        unknown = sorted(str(k) for k in set(data) - set(REQUEST_FIELDS))
        if unknown:
            raise ValueError(f"unknown subscription properties: {', '.join(unknown)}")
        if "protocol" not in data:
            raise ValueError("protocol is required (HTTP)")
        if data["protocol"] != "HTTP":
            raise ValueError(f"protocol {data['protocol']!r} is not supported: only HTTP")
        if not isinstance(data.get("source"), str) or not data["source"]:
            raise ValueError("source is required: the `source` of a product listed by GET /products")
        config = data.get("config")
        pull = isinstance(config, dict) and config.get("delivery") == "pull"
        if pull and data.get("sink") is not None:
            raise ValueError("sink: a pull subscription (config.delivery: pull) has no sink: leave it out, "
                             "the subscriber receives with POST /subscriptions/{id}:receive")
        if not pull and (not isinstance(data.get("sink"), str) or not data["sink"]):
            raise ValueError("sink is required: the URL events are delivered to")
        return {k: v for k, v in data.items() if v is not None}

    @field_validator("types", mode="before")
    @classmethod
    def _types(cls, v: Any) -> Any:
        if not isinstance(v, list) or not all(isinstance(t, str) and t for t in v):
            raise ValueError("types must be an array of non-empty strings")
        return v

    @field_validator("filters", mode="before")
    @classmethod
    def _filters(cls, v: Any) -> Any:
        try:
            return validate_filters(v)
        except FilterError as exc:
            raise ValueError(str(exc)) from None

    def stored(self, raw_config: Any) -> dict[str, Any]:
        """The body the store keeps: the validated fields, `config` as the subscriber wrote it
        (so a GET shows what was asked, and a GET → PUT round trip sends it back unchanged)."""
        body: dict[str, Any] = {
            "source": self.source, **({"sink": self.sink} if self.sink is not None else {}), "protocol": self.protocol,
            "config": dict(raw_config or {}), "filters": self.filters,
            "protocolsettings": self.protocolsettings.model_dump(),
        }
        if self.types is not None:
            body["types"] = list(self.types)
        return body


class ReplayRequest(_Model):
    """The body of POST /subscriptions/{id}/replay."""

    startfrom: Literal["latest", "earliest"] | dict[int, int] | datetime

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "startfrom" not in data or set(data) - {"startfrom"}:
            raise ValueError('the body is {"startfrom": "earliest" | "latest" | {partition: offset} | ISO-8601 time}')
        return data

    @field_validator("startfrom", mode="before")
    @classmethod
    def _startfrom(cls, v: Any, info: ValidationInfo) -> Any:
        try:
            return parse_startfrom(v, now=(info.context or {}).get("now"), where="startfrom")
        except StartFromError as exc:
            raise ValueError(str(exc)) from None


def problem(exc: ValidationError) -> str:
    """The first problem of a validation, as one sentence that starts with the field's path."""
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
    if not where or message.startswith(where.split(".")[0]) or message.startswith("the request body"):
        return message
    return f"{where}: {message}"


def parse_request(body: Any, *, now: datetime | None = None) -> SubscriptionRequest:
    """Validate a subscription request; raises RequestError naming the field. `now` (a new or
    changed request) refuses what only a stored subscription may hold: a start in the future."""
    try:
        return SubscriptionRequest.model_validate(body, context={"now": now})
    except ValidationError as exc:
        raise RequestError(problem(exc)) from None


def parse_options(config: Any, *, now: datetime | None = None) -> SubscriptionOptions:
    """`config` alone, typed (a stored subscription's, or a request's)."""
    try:
        return SubscriptionOptions.model_validate(config or {}, context={"now": now})
    except ValidationError as exc:
        raise RequestError(problem(exc)) from None


def parse_replay(body: Any, *, now: datetime | None = None) -> ReplayRequest:
    try:
        return ReplayRequest.model_validate(body, context={"now": now})
    except ValidationError as exc:
        raise RequestError(problem(exc)) from None
