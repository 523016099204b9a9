"""The subscription manager's operations, shared by the HTTP API and the CLI.

Every operation takes the calling organisation (from its bearer token) and answers with a
`FlowError` carrying the HTTP status and a message naming the problem: 400 for a request
outside the CloudEvents Subscriptions API, the product's policy or the sink rules, 403 when a
subscriber asks for an owner's action on something it may see, 404 for what the caller may not
see (someone else's subscription is indistinguishable from one that does not exist), 409 for
a state change the lifecycle does not allow.

Lifecycle: `requested` → (handshake) → `pending_approval` (or `active` for an organisation
the product auto-approves) → `active` ⇄ `paused` → `retired` (the receiver said 410) |
`failed` (no consent) | `rejected` (by the owner) | `deleted` (by the subscriber).
"""

from __future__ import annotations

import re
from typing import Any

from connectors.gateway.events import product_source
from connectors.gateway.filters import FilterError, validate_filters
from connectors.gateway.handshake import handshake
from connectors.gateway.policy import PolicyError, auto_approved, check_subscription
from connectors.gateway.settings import GatewaySettings
from connectors.gateway.ssrf import SinkRefused, check_sink
from connectors.gateway.startfrom import StartFromError, parse_startfrom, resolve_startfrom
from connectors.gateway.store import GatewayStore, Subscription
from connectors.kafka import topic_partitions
from connectors.spec import DataProductSpec, parse_duration

FIELDS = {"id", "source", "types", "config", "filters", "sink", "protocol", "protocolsettings", "sinkcredential"}
CONFIG_KEYS = {"startfrom", "ordered", "mode", "maxbatch", "maxinflight", "ttl"}
MODES = ("binary", "structured", "batched")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}\Z")
FORBIDDEN_HEADER = re.compile(r"^(ce-|webhook-|content-|host$|connection$|transfer-encoding$)", re.IGNORECASE)


class FlowError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


def _bad(message: str) -> FlowError:
    return FlowError(400, message)


class FlowService:
    def __init__(self, store: GatewayStore, specs: list[DataProductSpec], settings: GatewaySettings,
                 bootstrap: str, kafka_config: dict[str, Any] | None = None):
        self.store, self.settings, self.bootstrap = store, settings, bootstrap
        self.kafka_config = kafka_config or {}
        self.specs = {s.name: s for s in specs}

    # --- who sees what --------------------------------------------------------------------

    def products(self) -> list[DataProductSpec]:
        return [s for s in self.specs.values() if s.flow.enabled]

    def owned_products(self, org: str) -> list[str]:
        return [s.name for s in self.specs.values() if s.owner == org]

    def visible(self, org: str) -> list[Subscription]:
        subs = self.store.list(org=org, products=self.owned_products(org))
        return [s for s in subs if s.state != "deleted"]

    def get(self, org: str, sub_id: str) -> Subscription:
        sub = self.store.get(sub_id)
        if sub is None or sub.state == "deleted" or (sub.org != org and sub.product not in self.owned_products(org)):
            raise FlowError(404, f"no subscription {sub_id!r}")
        return sub

    # --- validation -----------------------------------------------------------------------

    def _spec_for(self, source: Any) -> DataProductSpec:
        if not isinstance(source, str) or not source:
            raise _bad("source is required: the `source` of a product listed by GET /products")
        for spec in self.products():
            if product_source(spec) == source:
                return spec
        raise _bad(f"source {source!r} is not a product that allows subscriptions (see GET /products)")

    def validate(self, org: str, body: Any) -> tuple[DataProductSpec, dict[str, Any]]:
        if not isinstance(body, dict):
            raise _bad("the request body must be a JSON object (a CloudEvents subscription)")
        unknown = sorted(set(body) - FIELDS - {"state", "reason", "org", "product"})
        if unknown:
            raise _bad(f"unknown subscription properties: {', '.join(unknown)}")
        if "sinkcredential" in body:
            raise _bad("sinkcredential is not supported: put the sink's Authorization header in protocolsettings.headers")
        if "protocol" not in body:
            raise _bad("protocol is required (HTTP)")
        if body["protocol"] != "HTTP":
            raise _bad(f"protocol {body['protocol']!r} is not supported: only HTTP")
        spec = self._spec_for(body.get("source"))
        types = body.get("types")
        if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) and t for t in types)):
            raise _bad("types must be an array of non-empty strings")
        try:
            filters = validate_filters(body.get("filters"))
        except FilterError as exc:
            raise _bad(str(exc)) from None
        config = self._config(body.get("config"))
        settings = self._protocolsettings(body.get("protocolsettings"))
        sink = body.get("sink")
        if not isinstance(sink, str) or not sink:
            raise _bad("sink is required: the URL events are delivered to")
        try:
            check_sink(sink, self.settings)
        except SinkRefused as exc:
            raise _bad(f"sink refused: {exc}") from None
        clean = {"source": body["source"], "sink": sink, "protocol": "HTTP", "config": config,
                 "filters": filters, "protocolsettings": settings}
        if types is not None:
            clean["types"] = types
        try:
            check_subscription(spec, org, clean)
        except PolicyError as exc:
            raise _bad(str(exc)) from None
        return spec, clean

    def _config(self, config: Any) -> dict[str, Any]:
        if config is None:
            return {}
        if not isinstance(config, dict):
            raise _bad("config must be an object")
        unknown = sorted(set(config) - CONFIG_KEYS)
        if unknown:
            raise _bad(f"config keys not supported: {', '.join(unknown)} (supported: {', '.join(sorted(CONFIG_KEYS))})")
        try:
            parse_startfrom(config.get("startfrom"))
        except StartFromError as exc:
            raise _bad(str(exc)) from None
        if config.get("mode", "binary") not in MODES:
            raise _bad(f"config.mode must be one of {', '.join(MODES)}")
        for key, top in (("maxbatch", 1000), ("maxinflight", 64)):
            if key in config:
                try:
                    n = int(config[key])
                except (TypeError, ValueError):
                    n = 0
                if not 1 <= n <= top:
                    raise _bad(f"config.{key} must be an integer from 1 to {top}")
        if "ordered" in config and str(config["ordered"]).lower() not in ("true", "false"):
            raise _bad("config.ordered must be true or false")
        if "ttl" in config:
            try:
                parse_duration(config["ttl"])
            except ValueError as exc:
                raise _bad(f"config.ttl: {exc}") from None
        return dict(config)

    def _protocolsettings(self, ps: Any) -> dict[str, Any]:
        if ps is None:
            return {}
        if not isinstance(ps, dict) or set(ps) - {"headers", "method"}:
            raise _bad("protocolsettings (HTTP) may carry only headers and method")
        method = ps.get("method", "POST")
        if method not in ("POST", "PUT"):
            raise _bad("protocolsettings.method must be POST or PUT")
        headers = ps.get("headers") or {}
        if not isinstance(headers, dict) or len(headers) > 20:
            raise _bad("protocolsettings.headers must be an object of at most 20 headers")
        for name, value in headers.items():
            if not HEADER_NAME.match(str(name)) or FORBIDDEN_HEADER.match(str(name)):
                raise _bad(f"protocolsettings.headers: {name!r} may not be set")
            if not isinstance(value, str) or len(value) > 4096 or any(c in value for c in "\r\n\0"):
                raise _bad(f"protocolsettings.headers.{name}: a header value is a single-line string")
        return {"headers": dict(headers), "method": method}

    # --- operations -----------------------------------------------------------------------

    def _consent(self, sub_id: str, body: dict[str, Any]) -> int | None:
        consent = handshake(body["sink"], self.settings, (body.get("protocolsettings") or {}).get("headers"))
        if not consent.granted:
            raise FlowError(400, f"handshake refused: {consent.detail}")
        return consent.rate_per_min

    def _positions(self, spec: DataProductSpec, sub_id: str, config: dict[str, Any]) -> None:
        partitions = topic_partitions(self.bootstrap, spec.topic, self.kafka_config)
        if not partitions:
            raise FlowError(503, f"the topic of {spec.name!r} is not available on the broker right now")
        try:
            start, not_before = resolve_startfrom(config.get("startfrom"), spec, partitions, self.bootstrap,
                                                  self.store.metastore, self.kafka_config)
        except StartFromError as exc:
            raise _bad(str(exc)) from None
        self.store.set_positions(sub_id, start, not_before)

    def create(self, org: str, body: Any) -> tuple[Subscription, str]:
        spec, clean = self.validate(org, body)
        sub, secret = self.store.create(org, spec.name, clean)
        try:
            self._positions(spec, sub.id, clean["config"])
            rate = self._consent(sub.id, clean)
        except FlowError as exc:
            self.store.transition(sub.id, "failed", ["requested"], exc.message)
            raise
        self.store.set_values(sub.id, rate_per_min=rate)
        to = "active" if auto_approved(spec, org) else "pending_approval"
        self.store.transition(sub.id, to, ["requested"], "auto-approved" if to == "active" else "waiting for the owner")
        return self.store.get(sub.id), secret

    def update(self, org: str, sub_id: str, body: Any) -> Subscription:
        sub = self.get(org, sub_id)
        if sub.org != org:
            raise FlowError(403, "only the subscriber changes its subscription")
        if isinstance(body, dict) and body.get("id") not in (None, sub_id):
            raise _bad("id in the body does not match the URL")
        spec, clean = self.validate(org, body)
        if spec.name != sub.product:
            raise _bad("source cannot change: delete this subscription and create another")
        if sub.state in ("retired", "failed", "rejected"):
            raise FlowError(409, f"subscription is {sub.state}; create a new one")
        values: dict[str, Any] = {}
        if clean["sink"] != sub.body["sink"] or clean.get("protocolsettings") != sub.body.get("protocolsettings"):
            values["rate_per_min"] = self._consent(sub_id, clean)
        self.store.update_body(sub_id, clean, **values)
        if clean["config"].get("startfrom") != sub.config.get("startfrom") and "startfrom" in clean["config"]:
            self._positions(spec, sub_id, clean["config"])  # a replay: the deliveries move there
        return self.store.get(sub_id)

    def delete(self, org: str, sub_id: str) -> Subscription:
        sub = self.get(org, sub_id)
        if sub.org != org:
            raise FlowError(403, "only the subscriber deletes its subscription; the owner rejects or pauses")
        self.store.transition(sub_id, "deleted", [s for s in ("requested", "pending_approval", "active", "paused", "retired", "failed", "rejected")], "deleted by the subscriber")
        return self.store.get(sub_id)

    def replay(self, org: str, sub_id: str, startfrom: Any) -> Subscription:
        """Move every partition's position to `startfrom` (an offset map, a time, earliest or
        latest): the gateway delivers from there again, in order. The subscriber's call."""
        sub = self.get(org, sub_id)
        if sub.org != org:
            raise FlowError(403, "only the subscriber replays its subscription")
        if sub.state not in ("active", "paused", "pending_approval"):
            raise FlowError(409, f"subscription is {sub.state}")
        try:
            parse_startfrom(startfrom)
        except StartFromError as exc:
            raise _bad(str(exc)) from None
        self._positions(self.specs[sub.product], sub_id, {"startfrom": startfrom})
        return self.store.get(sub_id)

    def rotate_secret(self, org: str, sub_id: str, grace_s: float) -> str:
        sub = self.get(org, sub_id)
        if sub.org != org:
            raise FlowError(403, "only the subscriber rotates its signing secret")
        return self.store.rotate_secret(sub_id, grace_s)

    OWNER_ACTIONS = {
        "approve": ("active", ("pending_approval",)),
        "reject": ("rejected", ("pending_approval", "active", "paused")),
        "pause": ("paused", ("active",)),
        "resume": ("active", ("paused",)),
    }

    def owner_action(self, org: str | None, sub_id: str, action: str, reason: str | None = None) -> Subscription:
        """An owner's decision; `org` None is the operator at the CLI (trusted)."""
        sub = self.get(org, sub_id) if org is not None else self.store.get(sub_id)
        if sub is None or sub.state == "deleted":
            raise FlowError(404, f"no subscription {sub_id!r}")
        if org is not None and sub.product not in self.owned_products(org):
            raise FlowError(403, f"only the owner of {sub.product!r} may {action} subscriptions")
        to, allowed = self.OWNER_ACTIONS[action]
        if not self.store.transition(sub_id, to, allowed, reason or f"{action}: by the owner"):
            raise FlowError(409, f"cannot {action} a subscription that is {sub.state}")
        return self.store.get(sub_id)
