"""A product's flow policy (its spec's `flow:` section) applied to subscriptions and events.

The owner decides: whether the product can be subscribed to at all, which filters every
subscription must carry (`require`, where "{org}" stands for the subscribing organisation —
`exact: {partnerid: "{org}"}` lets a partner see only its own records), and which
organisations are approved without asking. The required filters are checked when a
subscription is made or changed *and* applied again to every event at delivery, so an event
outside the policy is never sent even if a subscription slipped past or the policy tightened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.errors import TerminalError
from connectors.gateway.events import FlowEvent, product_source, product_type
from connectors.gateway.filters import matches, select
from connectors.spec import DataProductSpec

if TYPE_CHECKING:
    from connectors.gateway.store import Subscription


class PolicyError(TerminalError, ValueError):
    """The subscription is outside what the product's owner allows; the message says what."""


def required_filters(spec: DataProductSpec, org: str) -> list[dict[str, Any]]:
    def fill(node: Any) -> Any:
        if isinstance(node, str):
            return node.replace("{org}", org)
        if isinstance(node, list):
            return [fill(x) for x in node]
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        return node

    return [fill(f) for f in spec.flow.require]


def _carries(filters: list[dict[str, Any]], required: dict[str, Any]) -> bool:
    """The subscription's top-level filters (all must hold) imply `required`."""
    if list(required) == ["exact"]:
        want = required["exact"]
        return any(
            list(f) == ["exact"] and all(f["exact"].get(k) == v for k, v in want.items()) for f in filters
        )
    return required in filters


def check_subscription(spec: DataProductSpec, org: str, body: dict[str, Any]) -> None:
    """Raise PolicyError unless the product allows this subscription by this organisation."""
    if not spec.flow.enabled:
        raise PolicyError(f"product {spec.name!r} does not allow subscriptions")
    types = body.get("types") or []
    offered = product_type(spec)
    for t in types:
        if t != offered:
            raise PolicyError(f"types: {t!r} is not emitted by {product_source(spec)} (it emits {offered!r})")
    filters = body.get("filters") or []
    for req in required_filters(spec, org):
        if not _carries(filters, req):
            raise PolicyError(
                f"filters: the owner of {spec.name!r} requires every subscription of {org!r} to carry "
                f"the filter {req} (as a top-level filter)"
            )


def auto_approved(spec: DataProductSpec, org: str) -> bool:
    return org in spec.flow.auto_approve


def event_filter(spec: DataProductSpec, org: str, body: dict[str, Any]):
    """`deliverable` for one subscription as it is now, with its policy filters filled in once."""
    required = required_filters(spec, org)
    filters = body.get("filters") or []
    source, types = body.get("source"), body.get("types")

    def keep(event: FlowEvent) -> bool:
        attrs = event.attributes
        if source and attrs.get("source") != source:
            return False
        if types and attrs.get("type") not in types:
            return False
        return matches(required, attrs) and matches(filters, attrs)

    return keep


def batch_selector(spec: DataProductSpec, org: str, body: dict[str, Any]):
    """`event_filter` for a whole batch (an `EventBatch` of connectors/gateway/feed.py): the
    events of the batch inside the subscription's source, types and filters and the product's
    required filters, in offset order. Source and type are the product's, the same for every
    event, so they are decided once; the filters are evaluated on the batch's columns and
    indexes (`filters.select`), not per event."""
    required = required_filters(spec, org)
    filters = [*required, *(body.get("filters") or [])]
    source, types = body.get("source"), body.get("types")
    if (source and source != product_source(spec)) or (types and product_type(spec) not in types):
        return lambda batch: []

    def pick(batch) -> list[FlowEvent]:
        events = batch.events
        return [events[i] for i in select(filters, batch)]

    return pick


def deliverable(spec: DataProductSpec, org: str, body: dict[str, Any], event: FlowEvent) -> bool:
    """The one question before an event is sent: inside the subscription's source, types and
    filters, and inside the product's required filters for this organisation."""
    attrs = event.attributes
    if body.get("source") and attrs.get("source") != body["source"]:
        return False
    types = body.get("types")
    if types and attrs.get("type") not in types:
        return False
    return matches(required_filters(spec, org), attrs) and matches(body.get("filters") or [], attrs)


@dataclass(frozen=True)
class RateLimit:
    """Requests per minute one subscription is sent at most (shared by its partitions): the
    lowest of the receiver's `WebHook-Allowed-Rate`, the subscriber's `config.rate` and the
    owner's `flow.max_rate`; None when none of the three is set."""

    per_minute: int | None
    receiver: int | None
    subscriber: int | None
    owner: int | None

    @property
    def capped(self) -> bool:
        """The subscriber asked for more than the owner allows (and gets the owner's cap)."""
        return self.subscriber is not None and self.owner is not None and self.subscriber > self.owner

    def notes(self) -> list[str]:
        if not self.capped:
            return []
        return [f"config.rate {self.subscriber} is above the owner's cap (flow.max_rate {self.owner} requests "
                f"per minute): delivering at most {self.owner}"]


def rate_limit(spec: DataProductSpec, sub: Subscription) -> RateLimit:
    """The rate a subscription is delivered at. A `config.rate` above the owner's cap is capped,
    not refused: the owner may lower the cap after subscriptions exist, and they keep working."""
    receiver, subscriber, owner = sub.rate_per_min, sub.options.rate, spec.flow.max_rate
    given = [r for r in (receiver, subscriber, owner) if r is not None]
    return RateLimit(min(given) if given else None, receiver, subscriber, owner)
