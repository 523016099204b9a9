"""The producer of change events: idempotent, `acks=all`, and a count of what the broker acknowledged."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any


class Deliveries:
    """Delivery reports of the producer: failures, and acknowledgements per partition."""

    def __init__(self) -> None:
        self.failures: list[Any] = []
        self.delivered: Counter[int] = Counter()

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.delivered[msg.partition()] += 1
        else:
            self.failures.append(err)

    def take(self) -> tuple[list[Any], Counter[int]]:
        out = (self.failures, self.delivered)
        self.failures, self.delivered = [], Counter()
        return out


def send(producer, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:  # the local queue is full: let deliveries drain
            producer.poll(0.05)


def make_producer(bootstrap: str, kafka_config: Mapping[str, Any] | None):
    """An idempotent producer like the query-based source's, with a short linger: every step
    flushes anyway, and a change should not wait for a batch to fill."""
    from confluent_kafka import Producer

    delivery = Deliveries()
    producer = Producer({
        **(kafka_config or {}),
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,  # retries never duplicate or reorder within the partition
        "acks": "all",
        "linger.ms": 2,
        "queue.buffering.max.messages": 500_000,
        "partitioner": "murmur2_random",
        "on_delivery": delivery,
    })
    return producer, delivery
