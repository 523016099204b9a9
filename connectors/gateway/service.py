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

from datetime import UTC, datetime
from typing import Any

from connectors.errors import FlowsuiteError
from connectors.gateway.events import product_source
from connectors.gateway.handshake import handshake
from connectors.gateway.models import ProtocolSettings, RequestError, parse_replay, parse_request
from connectors.gateway.policy import PolicyError, auto_approved, check_subscription, rate_limit
from connectors.gateway.settings import GatewaySettings
from connectors.gateway.ssrf import SinkRefused, check_sink
from connectors.gateway.startfrom import StartFromError, resolve_startfrom
from connectors.gateway.store import GatewayStore, Subscription
from connectors.kafka import topic_partitions
from connectors.spec import DataProductSpec

# What the gateway sets and a request cannot: the answer to GET carries them, so a PUT may
# repeat them (a GET → PUT round trip) but not change them.
READ_ONLY = ("id", "state", "reason", "org", "product", "status")
STATUS_KEYS = ("delivered", "deadlettered", "failures", "lastoutcome", "lastattempt", "lastsuccess",
               "ratelimit", "ratelimits", "notes", "positions")
HOW_TO_CHANGE = {
    "id": "it is assigned by the gateway and named by the URL",
    "state": "the owner approves, rejects, pauses and resumes (POST /subscriptions/{id}/approve|reject|pause|resume); "
             "the subscriber deletes (DELETE /subscriptions/{id})",
    "reason": "the gateway records why the subscription is in its state",
    "org": "it is the organisation of the bearer token",
    "product": "it follows from `source`: delete this subscription and create another",
}


class FlowError(FlowsuiteError):
    """An answer of the Subscriptions API other than success: its HTTP status and a message
    naming the problem (4xx: the request must change; 503: try again later)."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.transient = status >= 500
        super().__init__(message)


def _bad(message: str) -> FlowError:
    return FlowError(400, message)


def _now() -> datetime:
    return datetime.now(UTC)


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

    def status(self, sub: Subscription) -> dict[str, Any]:
        """The gateway's report on a subscription (`status` in the API's answers)."""
        spec = self.specs.get(sub.product)
        limit = rate_limit(spec, sub) if spec is not None else None
        return {
            "delivered": sub.delivered, "deadlettered": sub.dead_lettered, "failures": sub.failures,
            "lastoutcome": sub.last_outcome, "lastattempt": sub.last_attempt_at, "lastsuccess": sub.last_success_at,
            "ratelimit": limit.per_minute if limit else sub.rate_per_min,
            "ratelimits": {"receiver": sub.rate_per_min, "subscriber": limit.subscriber if limit else None,
                           "owner": limit.owner if limit else None},
            "notes": limit.notes() if limit else [],
            "positions": {str(p): o for p, (o, _) in self.store.positions(sub.id).items()},
        }

    # --- validation -----------------------------------------------------------------------

    def _spec_for(self, source: str) -> DataProductSpec:
        for spec in self.products():
            if product_source(spec) == source:
                return spec
        raise _bad(f"source {source!r} is not a product that allows subscriptions (see GET /products)")

    def _read_only(self, org: str, body: dict[str, Any], current: Subscription | None) -> dict[str, Any]:
        """`body` without the fields the gateway sets. A new subscription may name its own org
        (and product); a PUT may repeat any of them as the subscription has it now. Anything
        else is a 400 naming the field, never a silent ignore."""
        rest = {k: v for k, v in body.items() if k not in READ_ONLY}
        for field in READ_ONLY:
            if body.get(field) is None:
                continue  # null: as if left out
            value = body[field]
            if field == "status":
                if not isinstance(value, dict) or set(value) - set(STATUS_KEYS):
                    raise _bad("status cannot be set: it is the gateway's report (a PUT may send back the "
                               "status a GET returned; it is not compared, its counts and positions move)")
                continue
            if current is None:
                if field == "org" and value == org or field == "product":
                    continue  # product: checked against source once the source is known
                raise _bad(f"{field} is set by the gateway: leave it out of a new subscription")
            now = getattr(current, field)
            if value != now:
                how = HOW_TO_CHANGE[field].replace("{id}", current.id)
                raise _bad(f"{field} cannot be changed with PUT (it is {now!r}, the body says {value!r}): {how}")
        return rest

    def validate(self, org: str, body: Any, current: Subscription | None = None) -> tuple[DataProductSpec, dict[str, Any]]:
        """The request checked (typed, inside the policy and the sink rules) and the body to
        store; `current` is the subscription a PUT replaces."""
        rest = self._read_only(org, body, current) if isinstance(body, dict) else body
        try:
            request = parse_request(rest, now=_now())
        except RequestError as exc:
            raise _bad(exc.message) from None
        spec = self._spec_for(request.source)
        if isinstance(body, dict) and current is None and body.get("product") not in (None, spec.name):
            raise _bad(f"product {body['product']!r} does not match source {request.source!r} (product {spec.name!r})")
        if current is not None and request.config.delivery != current.options.delivery:
            raise _bad("config.delivery cannot change: delete this subscription and create another")
        if request.sink is not None:  # None: pull delivery, nothing is sent anywhere
            try:
                check_sink(request.sink, self.settings)
            except SinkRefused as exc:
                raise _bad(f"sink refused: {exc}") from None
        clean = request.stored(rest.get("config"))
        try:
            check_subscription(spec, org, clean)
        except PolicyError as exc:
            raise _bad(str(exc)) from None
        return spec, clean

    # --- operations -----------------------------------------------------------------------

    def _consent(self, sub_id: str, body: dict[str, Any]) -> int | None:
        if body.get("sink") is None:
            return None  # pull delivery: no sink to ask (connectors/gateway/pull.py)
        consent = handshake(body["sink"], self.settings, (body.get("protocolsettings") or {}).get("headers"))
        if not consent.granted:
            raise FlowError(400, f"handshake refused: {consent.detail}")
        return consent.rate_per_min

    def _positions(self, spec: DataProductSpec, sub_id: str, startfrom: Any) -> None:
        """Move every partition's position to `startfrom` (parsed, or as the subscriber wrote it)."""
        partitions = topic_partitions(self.bootstrap, spec.topic, self.kafka_config)
        if not partitions:
            raise FlowError(503, f"the topic of {spec.name!r} is not available on the broker right now")
        try:
            start, not_before = resolve_startfrom(startfrom, spec, partitions, self.bootstrap,
                                                  self.store.metastore, self.kafka_config)
        except StartFromError as exc:
            raise _bad(str(exc)) from None
        self.store.set_positions(sub_id, start, not_before)

    def create(self, org: str, body: Any) -> tuple[Subscription, str]:
        spec, clean = self.validate(org, body)
        sub, secret = self.store.create(org, spec.name, clean)
        try:
            self._positions(spec, sub.id, clean["config"].get("startfrom"))
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
        spec, clean = self.validate(org, body, current=sub)
        if spec.name != sub.product:
            raise _bad("source cannot change: delete this subscription and create another")
        if sub.state in ("retired", "failed", "rejected"):
            raise FlowError(409, f"subscription is {sub.state}; create a new one")
        values: dict[str, Any] = {}
        before = ProtocolSettings.model_validate(sub.body.get("protocolsettings") or {})
        if clean.get("sink") != sub.body.get("sink") or ProtocolSettings.model_validate(clean["protocolsettings"]) != before:
            values["rate_per_min"] = self._consent(sub_id, clean)
        self.store.update_body(sub_id, clean, **values)
        startfrom = clean["config"].get("startfrom")
        if startfrom is not None and startfrom != sub.config.get("startfrom"):
            self._positions(spec, sub_id, startfrom)  # a replay: the deliveries move there
        return self.store.get(sub_id)

    def delete(self, org: str, sub_id: str) -> Subscription:
        sub = self.get(org, sub_id)
        if sub.org != org:
            raise FlowError(403, "only the subscriber deletes its subscription; the owner rejects or pauses")
        self.store.transition(sub_id, "deleted", [s for s in ("requested", "pending_approval", "active", "paused", "retired", "failed", "rejected")], "deleted by the subscriber")
        return self.store.get(sub_id)

    def replay(self, org: str, sub_id: str, body: Any) -> Subscription:
        """Move every partition's position to `body["startfrom"]` (an offset map, a past time,
        earliest or latest): the gateway delivers from there again, in order. The subscriber's call."""
        sub = self.get(org, sub_id)
        if sub.org != org:
            raise FlowError(403, "only the subscriber replays its subscription")
        if sub.state not in ("active", "paused", "pending_approval"):
            raise FlowError(409, f"subscription is {sub.state}")
        try:
            request = parse_replay(body, now=_now())
        except RequestError as exc:
            raise _bad(exc.message) from None
        self._positions(self.specs[sub.product], sub_id, request.startfrom)
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
