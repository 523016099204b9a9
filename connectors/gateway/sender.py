"""One HTTP delivery attempt and what its answer means (http-webhook.md §2, Standard Webhooks).

2xx is delivered; 410 retires the subscription; 400, 413 and 415 will not get better by
retrying, so the events go to the dead letter at once; 429 and 503 are retried no sooner than
their `Retry-After`; everything else — 3xx included, redirects are never followed — and every
connection error is retried with backoff. Before each connection the sink is checked again
(its name may resolve elsewhere now). Outcomes never carry the sink's query string, headers
or secrets: they end up in the metastore and in logs.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass

import httpx

from connectors.gateway.settings import GatewaySettings
from connectors.gateway.signing import webhook_headers
from connectors.gateway.ssrf import SinkRefused, check_sink

# httpx logs every request's full URL at INFO, and a sink's query may carry an access_token.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

RESERVED_HEADERS = {"host", "content-length", "content-type", "transfer-encoding", "connection"}


@dataclass(frozen=True)
class Outcome:
    kind: str  # ok | retry | retire | dead
    detail: str
    retry_after: float | None = None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(status: int, retry_after: str | None) -> Outcome:
    if 200 <= status < 300:
        return Outcome("ok", f"HTTP {status}")
    if status == 410:
        return Outcome("retire", "HTTP 410 Gone: the receiver retired this subscription")
    if status in (400, 413, 415):
        return Outcome("dead", f"HTTP {status}: the receiver refuses these events")
    if status in (429, 503):
        return Outcome("retry", f"HTTP {status}", _retry_after(retry_after))
    if 300 <= status < 400:
        return Outcome("retry", f"HTTP {status}: redirects are not followed")
    return Outcome("retry", f"HTTP {status}")


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter, capped."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


class RateLimiter:
    """Requests per minute (WebHook-Allowed-Rate), a token bucket shared by a subscription's
    partitions in this process."""

    def __init__(self, per_minute: int | None):
        self.per_s = None if not per_minute else per_minute / 60.0
        self.tokens = 1.0
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        if self.per_s is None:
            return
        while not stop.is_set():
            with self.lock:
                now = time.monotonic()
                self.tokens = min(max(1.0, self.per_s), self.tokens + (now - self.at) * self.per_s)
                self.at = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                pause = (1 - self.tokens) / self.per_s
            stop.wait(min(pause, 1.0))


class Sender:
    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.client = httpx.Client(
            follow_redirects=False, timeout=settings.request_timeout_s, trust_env=False,
            # every connection kept alive: with 1,000 subscriptions' deliveries sending at once, a
            # keep-alive limit below the connection limit closed and opened connections all the time
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
        )
        self._checked: dict[str, float] = {}

    def close(self) -> None:
        self.client.close()

    def _check(self, sink: str) -> None:
        # A resolution is trusted for a few seconds; then checked again before connecting.
        if self._checked.get(sink, 0) > time.monotonic():
            return
        check_sink(sink, self.settings)
        self._checked[sink] = time.monotonic() + 5.0

    def send(self, body_of_sub: dict, secrets: list[str], msg_id: str, headers: dict[str, str], body: bytes) -> Outcome:
        sink = body_of_sub["sink"]
        settings = body_of_sub.get("protocolsettings") or {}
        try:
            self._check(sink)
        except SinkRefused as exc:
            return Outcome("retry", f"sink refused: {exc}")
        send = {k: v for k, v in (settings.get("headers") or {}).items() if k.lower() not in RESERVED_HEADERS}
        send.update(headers)
        send.update(webhook_headers(secrets, msg_id, body))
        send["WebHook-Request-Origin"] = self.settings.origin
        try:
            resp = self.client.request(settings.get("method") or "POST", sink, headers=send, content=body)
        except httpx.HTTPError as exc:
            return Outcome("retry", f"no answer: {type(exc).__name__}")
        return classify(resp.status_code, resp.headers.get("retry-after"))
