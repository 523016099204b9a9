"""Who may push to a product: its `inbound.senders`, their secrets and origins, the handshake
answer (cloudevents/http-webhook.md §4.2) and the per-organisation rate (429 beyond it).

Secrets come from the environment mapping the caller passes (the engine never reads the
process environment): `secret_env`, and during a rotation `previous_secret_env` until
`previous_until`. A sender whose variable is unset cannot be verified: its requests get 401
(the handshake still consents: it is about the origin, and the secret usually arrives after
it, when the sending organisation's subscription was created). Secrets never reach a message.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from connectors.errors import TerminalError
from connectors.gateway.signing import SignatureError, valid_secret, verify
from connectors.spec import DataProductSpec, InboundSenderSpec


@dataclass
class Sender:
    spec: InboundSenderSpec
    secret: str | None = field(repr=False)
    previous: str | None = field(repr=False)
    previous_until: float | None
    limiter: RateLimit

    @property
    def org(self) -> str:
        return self.spec.org

    def secrets(self, now: float) -> list[str]:
        out = [self.secret] if self.secret else []
        if self.previous and (self.previous_until or 0) > now:
            out.append(self.previous)
        return out

    def accepts_source(self, source: str) -> bool:
        return any(source.startswith(s[:-1]) if s.endswith("*") else source == s for s in self.spec.sources)


class RateLimit:
    """Requests per minute as a token bucket holding up to ten seconds' worth (at least two), so a
    sender that keeps to the rate it was granted is never refused for the jitter of its clock."""

    def __init__(self, per_minute: int | None):
        self.per_s = None if per_minute is None else per_minute / 60.0
        self.capacity = 0.0 if self.per_s is None else max(2.0, self.per_s * 10)
        self.tokens = self.capacity
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float | None:
        """None when the request may go ahead, else the seconds until it may (Retry-After)."""
        if self.per_s is None:
            return None
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_s)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return None
            return (1 - self.tokens) / self.per_s


class Unverified(TerminalError, ValueError):
    """The request is not signed by a sender of the product (401)."""


@dataclass
class ProductSenders:
    spec: DataProductSpec
    senders: list[Sender]
    warnings: list[str]

    @classmethod
    def resolve(cls, spec: DataProductSpec, env: Mapping[str, str], source_name: str = "") -> ProductSenders:
        assert spec.inbound is not None
        where = source_name or f"data product {spec.name}"
        senders, warnings = [], []
        for i, s in enumerate(spec.inbound.senders):
            secret = env.get(s.secret_env) or None
            previous = (env.get(s.previous_secret_env) or None) if s.previous_secret_env else None
            for var, value in ((s.secret_env, secret), (s.previous_secret_env, previous)):
                if value is not None and not valid_secret(value):
                    warnings.append(f"{where}: inbound.senders[{i}]({s.org}): {var} is not a Standard Webhooks "
                                    "secret (whsec_ + base64 of 24-64 bytes); it is not used")
            secret = secret if secret is not None and valid_secret(secret) else None
            previous = previous if previous is not None and valid_secret(previous) else None
            if secret is None and env.get(s.secret_env) is None:
                warnings.append(f"{where}: inbound.senders[{i}]({s.org}): {s.secret_env} is not set; requests of "
                                f"{s.org} are refused (401) until it is")
            until = s.previous_until.timestamp() if s.previous_until else None
            senders.append(Sender(s, secret, previous, until, RateLimit(s.rate)))
        return cls(spec, senders, warnings)

    def for_origin(self, origin: str | None) -> list[Sender]:
        if origin is None:
            return list(self.senders)
        return [s for s in self.senders if origin.strip() in s.spec.origins]

    def identify(self, headers: dict[str, str], body: bytes, now: float | None = None) -> Sender:
        """The sender whose secret verifies the request's Standard Webhooks signature."""
        now = time.time() if now is None else now
        origin = headers.get("webhook-request-origin")
        candidates = self.for_origin(origin)
        if not candidates:
            raise Unverified(f"no sender of {self.spec.name} sends from WebHook-Request-Origin {origin.strip()[:100]!r}")
        tolerance = self.spec.inbound.tolerance.total_seconds()
        last: SignatureError | None = None
        for sender in candidates:
            secrets = sender.secrets(now)
            if not secrets:
                continue
            try:
                verify(secrets, headers, body, tolerance, now)
                return sender
            except SignatureError as exc:
                last = exc
        if last is None:
            raise Unverified(f"the receiver holds no secret for the sender(s) of {self.spec.name} from this origin yet")
        if len(candidates) > 1 and "verifies" in str(last):
            raise Unverified(f"the request is not signed by a sender of {self.spec.name}")
        raise Unverified(str(last))

    def handshake(self, headers: dict[str, str]) -> dict[str, str]:
        """The OPTIONS answer's headers: consent (`WebHook-Allowed-Origin`, `WebHook-Allowed-Rate`)
        only for an origin a sender of the product registered."""
        answer = {"Allow": "POST, OPTIONS"}
        origin = (headers.get("webhook-request-origin") or "").strip()
        senders = self.for_origin(origin) if origin else []
        if not senders:
            return answer
        rates = [s.spec.rate for s in senders]
        granted = None if any(r is None for r in rates) else max(rates)
        asked = (headers.get("webhook-request-rate") or "").strip()
        if asked.isdigit() and int(asked) > 0:
            granted = int(asked) if granted is None else min(granted, int(asked))
        answer["WebHook-Allowed-Origin"] = origin
        answer["WebHook-Allowed-Rate"] = "*" if granted is None else str(granted)
        return answer


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
