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
