"""The gateway's settings, read once from the environment (plain values, no Dagster).

| variable | default | meaning |
|---|---|---|
| `FLOWSUITE_FLOW_ORIGIN` | `flowsuite.local` | our `WebHook-Request-Origin` (a DNS name naming the sender) |
| `FLOWSUITE_FLOW_ALLOW_HTTP` | `false` | accept `http://` sinks (tests, the demo); production sinks are `https://` |
| `FLOWSUITE_FLOW_ALLOW_SINKS` | empty | CIDRs a sink may resolve into although not global, e.g. `127.0.0.1/32` |
| `FLOWSUITE_FLOW_LEASE_S` | `15` | lease of a (subscription, partition) claim; a killed gateway's work moves after it |
| `FLOWSUITE_FLOW_RETRY_CAP_S` | `300` | longest pause between two attempts |
| `FLOWSUITE_FLOW_TTL_S` | `86400` | how long an event is retried before it goes to the dead letter (per subscription: `config.ttl`) |
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class GatewaySettings:
    origin: str = "flowsuite.local"
    allow_http: bool = False
    allow_sinks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    lease_s: float = 15.0
    retry_base_s: float = 0.5
    retry_cap_s: float = 300.0
    ttl_s: float = 86_400.0
    request_timeout_s: float = 15.0  # Standard Webhooks: 15-30 s
    max_batch: int = 500  # events per batched request, and per read from Kafka
    max_body_bytes: int = 64 * 1024  # API request bodies
    poll_interval_s: float = 1.0  # how often a gateway looks for work
    extra: dict = field(default_factory=dict)


def load_gateway_settings(env: Mapping[str, str] | None = None) -> GatewaySettings:
    env = dict(os.environ if env is None else env)
    nets = tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in (env.get("FLOWSUITE_FLOW_ALLOW_SINKS") or "").split(",")
        if part.strip()
    )
    return GatewaySettings(
        origin=env.get("FLOWSUITE_FLOW_ORIGIN") or "flowsuite.local",
        allow_http=_flag(env.get("FLOWSUITE_FLOW_ALLOW_HTTP")),
        allow_sinks=nets,
        lease_s=float(env.get("FLOWSUITE_FLOW_LEASE_S") or 15),
        retry_cap_s=float(env.get("FLOWSUITE_FLOW_RETRY_CAP_S") or 300),
        ttl_s=float(env.get("FLOWSUITE_FLOW_TTL_S") or 86_400),
    )
