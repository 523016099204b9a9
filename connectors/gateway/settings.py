"""The gateway's settings (plain values, no Dagster), from connectors/settings.py's fields.

| variable | default | meaning |
|---|---|---|
| `FLOWSUITE_FLOW_ORIGIN` | `flowsuite.local` | our `WebHook-Request-Origin` (a DNS name naming the sender) |
| `FLOWSUITE_FLOW_ALLOW_HTTP` | `false` | accept `http://` sinks (tests, the demo); production sinks are `https://` |
| `FLOWSUITE_FLOW_ALLOW_SINKS` | empty | CIDRs a sink may resolve into although not global, e.g. `127.0.0.1/32` |
| `FLOWSUITE_FLOW_LEASE_S` | `2` | lease of a (subscription, partition) claim, renewed every lease/4 (a heartbeat); a killed gateway's work moves after it |
| `FLOWSUITE_FLOW_RETRY_CAP_S` | `300` | longest pause between two attempts |
| `FLOWSUITE_FLOW_TTL_S` | `86400` | how long an event is retried before it goes to the dead letter (per subscription: `config.ttl`) |
| `FLOWSUITE_FLOW_PUBLIC_URL` | unset | the gateway's public root URL: its xRegistry's base and the events' `dataschema` (unset: no `dataschema`) |
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GatewaySettings:
    origin: str = "flowsuite.local"
    allow_http: bool = False
    allow_sinks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    lease_s: float = 2.0  # heartbeats every lease/4: a SIGKILLed gateway's work moves within ~3 s
    retry_base_s: float = 0.5
    retry_cap_s: float = 300.0
    ttl_s: float = 86_400.0
    request_timeout_s: float = 15.0  # Standard Webhooks: 15-30 s
    max_batch: int = 500  # events per batched request, and per read from Kafka
    max_body_bytes: int = 64 * 1024  # API request bodies
    poll_interval_s: float = 0.5  # how often a gateway looks for work (and takes over expired claims)
    public_url: str | None = None  # FLOWSUITE_FLOW_PUBLIC_URL: the registry's root, events' dataschema base
    extra: dict = field(default_factory=dict)


def gateway_settings(settings: Any) -> GatewaySettings:
    """The gateway's settings from flowsuite's settings object (connectors/settings.py)."""
    nets = tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in (settings.flow_allow_sinks or "").split(",")
        if part.strip()
    )
    return GatewaySettings(
        origin=settings.flow_origin, allow_http=settings.flow_allow_http, allow_sinks=nets,
        lease_s=settings.flow_lease_s, retry_cap_s=settings.flow_retry_cap_s, ttl_s=settings.flow_ttl_s,
        public_url=settings.flow_public_url,
    )


def load_gateway_settings(env: Mapping[str, str]) -> GatewaySettings:
    """`gateway_settings(load_settings(env))` for a given mapping (tests); the engine never
    reads the process environment itself: callers pass connectors.settings values down."""
    from connectors.settings import load_settings

    return gateway_settings(load_settings(env))
