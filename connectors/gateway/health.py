"""How each subscription of a product is doing: state, lag per partition, failures.

Shared by `flowsuite flow list|show`, `flowsuite status` and the Dagster asset and check of
each product that allows flow. Lag is the records of the partition not yet passed by the
subscription (matching its filters or not): the end comes from a fetch, as the landing
sensor's does, since the embedded broker's ListOffsets is only a lower bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from connectors.gateway.store import GatewayStore, Subscription
from connectors.kafka import consumer_config, probe_partitions
from connectors.spec import DataProductSpec

FAILING_AFTER_S = 600.0  # an active subscription failing for longer than this is unhealthy
MAX_LAG = 100_000  # records an active subscription may trail its partitions by


@dataclass(frozen=True)
class SubscriptionHealth:
    sub: Subscription
    partitions: dict[int, dict[str, Any]] = field(default_factory=dict)  # position, end, lag

    @property
    def lag(self) -> int | None:
        lags = [v["lag"] for v in self.partitions.values()]
        return None if not lags or any(x is None for x in lags) else sum(lags)

    def problems(self, failing_after_s: float = FAILING_AFTER_S, max_lag: int = MAX_LAG, now: float | None = None) -> list[str]:
        if self.sub.state != "active":
            return []
        now = time.time() if now is None else now
        out = []
        if self.sub.failures:
            since = self.sub.last_success_at or self.sub.updated_at
            if now - since > failing_after_s:
                out.append(f"{self.sub.id} ({self.sub.org}) failing for {now - since:.0f} s: {self.sub.last_outcome}")
        if self.lag is not None and self.lag > max_lag:
            out.append(f"{self.sub.id} ({self.sub.org}) lags {self.lag} records (bound {max_lag})")
        return out

    def metadata(self) -> dict[str, Any]:
        return {
            "state": self.sub.state, "org": self.sub.org, "delivered": self.sub.delivered,
            "dead_lettered": self.sub.dead_lettered, "failures": self.sub.failures,
            "last_outcome": self.sub.last_outcome, "last_success_at": self.sub.last_success_at,
            "lag": self.lag, "partitions": {str(p): v for p, v in self.partitions.items()},
        }


def partition_lag(store: GatewayStore, spec: DataProductSpec, sub: Subscription, bootstrap: str,
                  kafka_config: dict[str, Any] | None = None) -> dict[int, dict[str, Any]]:
    positions = {p: o for p, (o, _) in store.positions(sub.id).items()}
    if not positions:
        return {}
    conf = consumer_config(bootstrap, f"flowsuite.flow.{sub.id}", {**(kafka_config or {}), "socket.timeout.ms": 3000})
    try:
        # always fetch: on the embedded broker ListOffsets can answer below the true end
        probes = probe_partitions(conf, spec.topic, positions, timeout=3.0, always_fetch=list(positions))
    except Exception:  # noqa: BLE001 - lag is best effort; state and failures still show
        return {p: {"position": o, "end": None, "lag": None} for p, o in positions.items()}
    return {
        p: {"position": positions[p], "end": pr.end if pr.end is not None else pr.end_hint, "lag": pr.waiting}
        for p, pr in probes.items()
    }


def product_health(store: GatewayStore, spec: DataProductSpec, bootstrap: str,
                   kafka_config: dict[str, Any] | None = None) -> list[SubscriptionHealth]:
    """Every subscription of the product that is not deleted, with lag for the live ones."""
    out = []
    for sub in store.list(products=[spec.name]):
        if sub.state == "deleted":
            continue
        lag = partition_lag(store, spec, sub, bootstrap, kafka_config) if sub.state in ("active", "paused") else {}
        out.append(SubscriptionHealth(sub, lag))
    return out
