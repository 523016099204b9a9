"""Kafka: exact offset-range reads, topic admin, the dead-letter topic, and the read-ahead stage."""

from __future__ import annotations

from connectors.kafka.admin import (
    admin_client,
    ensure_topic,
    topic_partitions,
)
from connectors.kafka.dlq import (
    DLQ_SUFFIX,
    MAX_MESSAGE_BYTES,
    DeadLetterError,
    DeadLetterPublisher,
    dlq_headers,
    dlq_publisher,
    dlq_topic,
    original_key,
)
from connectors.kafka.probe import PROBE_CONF, probe_committed, topic_metadata
from connectors.kafka.reader import (
    CONSUME_TIMEOUT_S,
    PREFETCH_BATCHES,
    HistoryLostError,
    KafkaReadError,
    PartitionProbe,
    PartitionRead,
    RangeReader,
    commit_group_offsets,
    consumer_config,
    partitions_of,
    probe_partitions,
)
from connectors.kafka.stages import (
    JOIN_TIMEOUT_S,
    StageCancelledError,
    StageDiedError,
    T,
    relaxed_gc,
    run_ahead,
)
from connectors.kafka.waiting import CommittedState, TopicUnavailableError, Waiting, probe_waiting

__all__ = [
    "PROBE_CONF",
    "probe_committed",
    "topic_metadata",
    "CommittedState",
    "TopicUnavailableError",
    "Waiting",
    "probe_waiting",
    "CONSUME_TIMEOUT_S",
    "DLQ_SUFFIX",
    "DeadLetterError",
    "DeadLetterPublisher",
    "HistoryLostError",
    "JOIN_TIMEOUT_S",
    "KafkaReadError",
    "MAX_MESSAGE_BYTES",
    "PREFETCH_BATCHES",
    "PartitionProbe",
    "PartitionRead",
    "RangeReader",
    "StageCancelledError",
    "StageDiedError",
    "T",
    "admin_client",
    "commit_group_offsets",
    "consumer_config",
    "dlq_headers",
    "dlq_publisher",
    "dlq_topic",
    "ensure_topic",
    "original_key",
    "partitions_of",
    "probe_partitions",
    "relaxed_gc",
    "run_ahead",
    "topic_partitions",
]
