"""The producer of change events: idempotent, `acks=all`, and a count of what the broker acknowledged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.sources.common import Deliveries, idempotent_producer, send

__all__ = ["Deliveries", "make_producer", "send"]


def make_producer(bootstrap: str, kafka_config: Mapping[str, Any] | None):
    """An idempotent producer like the query-based source's, with a short linger: every step
    flushes anyway, and a change should not wait for a batch to fill."""
    return idempotent_producer(bootstrap, kafka_config, **{"linger.ms": 2, "queue.buffering.max.messages": 500_000})
