"""Topic administration the engine, the CLI and the tests share (Dagster-free).

Tansu, like a Kafka broker with auto-create off, needs topics created before they are
produced to; `ensure_topic` does that and is safe to call every time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def admin_client(bootstrap: str, kafka_config: Mapping[str, Any] | None = None) -> AdminClient:
    """An AdminClient; security settings (security.protocol, sasl.*, ssl.*) pass through."""
    return AdminClient({**(kafka_config or {}), "bootstrap.servers": bootstrap})


def ensure_topic(
    bootstrap: str,
    topic: str,
    partitions: int = 1,
    replication_factor: int = 1,
    kafka_config: Mapping[str, Any] | None = None,
    timeout: float = 15.0,
) -> bool:
    """Create `topic` when it does not exist; True when this call created it.

    An existing topic is left as it is, whatever its partition count.
    """
    admin = admin_client(bootstrap, kafka_config)
    if _describe(admin, topic, timeout) is not None:
        return False
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    try:
        futures[topic].result(timeout=timeout)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise
    return True


def topic_partitions(
    bootstrap: str, topic: str, kafka_config: Mapping[str, Any] | None = None, timeout: float = 10.0
) -> list[int]:
    """The partition ids of `topic`, sorted; empty when the topic does not exist."""
    existing = _describe(admin_client(bootstrap, kafka_config), topic, timeout)
    return sorted(existing.partitions) if existing is not None else []


def _describe(admin: AdminClient, topic: str, timeout: float):
    # Ask for all topics, never for one by name: a metadata request naming a topic makes
    # Tansu (and brokers with auto.create.topics.enable) create it with default partitions.
    existing = admin.list_topics(timeout=timeout).topics.get(topic)
    if existing is None or existing.error is not None or not existing.partitions:
        return None
    return existing
