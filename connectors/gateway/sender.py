"""One HTTP delivery attempt and what its answer means (http-webhook.md §2, Standard Webhooks).

2xx is delivered; 410 retires the subscription; 400, 413 and 415 will not get better by
retrying, so the events go to the dead letter at once; 429 and 503 are retried no sooner than
their `Retry-After`; everything else — 3xx included, redirects are never followed — and every
connection error is retried with backoff. Before each connection the sink is checked again
(its name may resolve elsewhere now). Outcomes never carry the sink's query string, headers
or secrets: they end up in the metastore and in logs.

The requests go through the standard library's `http.client` on keep-alive connections pooled
per (scheme, host, port), at most MAX_CONNECTIONS at once: with 1,000 partner subscriptions
each event is a request of its own, and httpx's per-request machinery (URL model, h11 state
machine, pool bookkeeping) was most of the gateway's CPU per event. A pooled connection the
receiver has closed is dropped before use (its socket reads as ready: EOF), and a request on a
reused connection that the receiver closed meanwhile is sent once more on a fresh one (the
receiver may then see it twice: at least once, as everywhere).
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import random
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from connectors.gateway.settings import GatewaySettings
from connectors.gateway.signing import webhook_headers
from connectors.gateway.ssrf import SinkRefused, check_sink

# httpx logs every request's full URL at INFO, and a sink's query may carry an access_token.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

RESERVED_HEADERS = {"host", "content-length", "content-type", "transfer-encoding", "connection"}
MAX_CONNECTIONS = 200  # requests in flight at once (a delivery beyond waits for one to end)
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


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
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._idle_lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._checked: dict[str, float] = {}

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()

    def _check(self, sink: str) -> None:
        # A resolution is trusted for a few seconds; then checked again before connecting.
        if self._checked.get(sink, 0) > time.monotonic():
            return
        check_sink(sink, self.settings)
        self._checked[sink] = time.monotonic() + 5.0

    def _connection(self, key: tuple[str, str, int]) -> tuple[http.client.HTTPConnection, bool]:
        """A pooled connection to `key` still open (True), or a new one (False)."""
        while True:
            with self._idle_lock:
                conns = self._idle.get(key)
                conn = conns.pop() if conns else None
            if conn is None:
                break
            sock = conn.sock
            if sock is not None:
                try:
                    readable = select.select([sock], [], [], 0)[0]
                except (OSError, ValueError):
                    readable = True
                if not readable:  # nothing to read on an idle connection: still open
                    return conn, True
            conn.close()  # the receiver closed it (EOF reads as ready)
        scheme, host, port = key
        timeout = self.settings.request_timeout_s
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls), False
        return http.client.HTTPConnection(host, port, timeout=timeout), False

    def _keep(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._idle_lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < MAX_CONNECTIONS:
                conns.append(conn)
                return
        conn.close()

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
        url = urlsplit(sink)
        key = (url.scheme, url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        method = settings.get("method") or "POST"
        with self.slots:
            for _ in range(2):
                conn, reused = self._connection(key)
                try:
                    if conn.sock is None:
                        conn.connect()
                        # http.client writes the head and the body apart: without TCP_NODELAY the
                        # body's last segment could wait for the head's delayed ACK (Nagle)
                        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn.request(method, target, body=body, headers=send)
                    resp = conn.getresponse()
                    resp.read()
                except STALE as exc:
                    conn.close()
                    if reused:  # closed by the receiver while it sat in the pool: once more on a fresh one
                        continue
                    return Outcome("retry", f"no answer: {type(exc).__name__}")
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    return Outcome("retry", f"no answer: {type(exc).__name__}")
                if resp.will_close:
                    conn.close()
                else:
                    self._keep(key, conn)
                return classify(resp.status, resp.getheader("retry-after"))
        return Outcome("retry", "no answer: the connection was closed twice")
