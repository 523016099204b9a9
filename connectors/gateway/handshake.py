"""The CloudEvents HTTP Webhook abuse-protection handshake (cloudevents/http-webhook.md §4).

Before anything is delivered, the gateway sends `OPTIONS` to the exact sink URI with
`WebHook-Request-Origin` (and `WebHook-Request-Rate` when it wants one). Only a response that
carries `WebHook-Allowed-Origin` equal to our origin or `*` is consent — a status code alone is
not (a site that handles OPTIONS for other reasons has not agreed). `WebHook-Allowed-Rate`
(requests per minute, or `*`) becomes the subscription's rate limit. The asynchronous
`WebHook-Request-Callback` variant is not offered: consent must come in the response.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from connectors.gateway.settings import GatewaySettings
from connectors.gateway.ssrf import check_sink


@dataclass(frozen=True)
class Consent:
    granted: bool
    rate_per_min: int | None  # None: no limit ('*' or not stated)
    detail: str


def handshake(sink: str, settings: GatewaySettings, headers: dict[str, str] | None = None, request_rate: int | None = None) -> Consent:
    check_sink(sink, settings)  # raises SinkRefused before any connection
    send = {**(headers or {}), "WebHook-Request-Origin": settings.origin}
    if request_rate:
        send["WebHook-Request-Rate"] = str(request_rate)
    try:
        with httpx.Client(follow_redirects=False, timeout=settings.request_timeout_s, trust_env=False) as client:
            resp = client.options(sink, headers=send)
    except httpx.HTTPError as exc:
        return Consent(False, None, f"the sink could not be reached for the handshake ({type(exc).__name__})")
    allowed = resp.headers.get("webhook-allowed-origin")
    if allowed is None or allowed.strip() not in (settings.origin, "*"):
        return Consent(
            False, None,
            f"the sink did not consent: its OPTIONS answer (HTTP {resp.status_code}) carries no "
            f"WebHook-Allowed-Origin for {settings.origin!r}",
        )
    rate_text = (resp.headers.get("webhook-allowed-rate") or "*").strip()
    if rate_text == "*":
        return Consent(True, None, "consent, no rate limit")
    if not rate_text.isdigit() or int(rate_text) <= 0:
        return Consent(False, None, f"WebHook-Allowed-Rate {rate_text!r} is not a positive integer or '*'")
    return Consent(True, int(rate_text), f"consent at {int(rate_text)} requests per minute")
