"""Standard Webhooks signatures (spec/standard-webhooks.md, v1: HMAC-SHA256).

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the header carries
`v1,<base64 signature>`, one per valid secret, space separated, so a receiver keeps verifying
across a secret rotation. `webhook-id` is the event's stable id (the same on every retry: the
receiver's idempotency key) and must not contain a full stop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from connectors.errors import TerminalError

SECRET_PREFIX = "whsec_"


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(raw + "==")


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def webhook_headers(secrets: list[str], msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    if "." in msg_id:
        raise ValueError("a webhook-id must not contain '.'")
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(signature(s, msg_id, ts, body) for s in secrets),
    }


class SignatureError(TerminalError, ValueError):
    """A request's Standard Webhooks headers do not verify; the message says which check failed
    (never a secret or the expected signature)."""


def verify(secrets: list[str], headers: dict[str, str], body: bytes, tolerance_s: float, now: float | None = None) -> int:
    """Verify a request as Standard Webhooks says: the three `webhook-*` headers present, the
    timestamp within `tolerance_s` of now (either way: replays outside it are refused), and one
    of the `v1,` signatures equal — compared in constant time — to the HMAC under one of
    `secrets`. Returns the index of the secret that verified; raises SignatureError.

    `headers` has lower-case names. Signatures of other schemes (`v1a`, ed25519) are skipped."""
    msg_id, stamp, sent = headers.get("webhook-id"), headers.get("webhook-timestamp"), headers.get("webhook-signature")
    missing = [n for n, v in (("webhook-id", msg_id), ("webhook-timestamp", stamp), ("webhook-signature", sent)) if not v]
    if missing:
        raise SignatureError(f"missing Standard Webhooks header(s): {', '.join(missing)}")
    if "." in msg_id:
        raise SignatureError("webhook-id must not contain '.'")
    if not stamp.strip().isdigit():
        raise SignatureError("webhook-timestamp must be an integer number of seconds since the epoch")
    ts = int(stamp.strip())
    skew = (time.time() if now is None else now) - ts
    if abs(skew) > tolerance_s:
        when = "old" if skew > 0 else "in the future"
        raise SignatureError(
            f"webhook-timestamp {ts} is {abs(skew):.0f} s {when}; the tolerance is {tolerance_s:.0f} s "
            "(a replayed or delayed request is refused: sign every attempt anew)"
        )
    given = []
    for part in sent.split():
        version, _, value = part.partition(",")
        if version == "v1" and value:
            try:
                given.append(base64.b64decode(value, validate=True))
            except ValueError:
                continue
    if not given:
        raise SignatureError("webhook-signature carries no v1 (HMAC-SHA256) signature")
    content = f"{msg_id}.{ts}.".encode() + body
    for index, secret in enumerate(secrets):
        expected = hmac.new(_key(secret), content, hashlib.sha256).digest()
        matched = False
        for candidate in given:  # every comparison runs: no early exit reveals which one matched
            matched |= hmac.compare_digest(expected, candidate)
        if matched:
            return index
    raise SignatureError("no signature in webhook-signature verifies with a secret of this sender")


def valid_secret(secret: str) -> bool:
    """A `whsec_` secret whose key is 24 to 64 bytes of base64 (Standard Webhooks)."""
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except ValueError:
        return False
    return 24 <= len(key) <= 64
