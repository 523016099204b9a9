"""What waits on the broker beyond a product's committed offsets: the offset sensor's probe.

One consumer, made for the probe, answers for every partition by one fetch from the committed
offsets (`connectors.kafka.probe.probe_committed`: exact ends and the oldest waiting record's
timestamp, no ListOffsets, whose answer lags the true end on Tansu). A committed offset past
the partition's end (the topic lost its history) raises HistoryLostError, never a silent
"nothing waiting". The topic listing is shared within the process (`topic_metadata`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, TopicPartition

from connectors.kafka.probe import PROBE_CONF, probe_committed, topic_metadata
from connectors.kafka.reader import (
    HistoryLostError,
    KafkaReadError,
    PartitionProbe,
)


class TopicUnavailableError(KafkaReadError):
    """The broker does not answer, or it has no such topic: nothing can be said about waiting."""


class CommittedState(Protocol):
    """A partition's committed state, as the metastore keeps it (`OffsetState`)."""

    next_offset: int
    at_eof: bool


@dataclass
class Waiting:
    """Per partition: the offset a landing would start at, and what the broker holds beyond it."""

    committed: dict[int, int]  # partition → start offset of the next landing
    probes: dict[int, PartitionProbe]
    behind: list[int]  # partitions whose last landing stopped before the end

    @property
    def records(self) -> int:
        return sum(pr.waiting for pr in self.probes.values())

    @property
    def unmeasured(self) -> list[int]:
        """Partitions left behind by the last landing whose waiting records this probe could not count."""
        return [p for p in self.behind if self.probes[p].end is None]

    @property
    def partitions(self) -> list[int]:
        """Partitions with records waiting (the unmeasured ones count as waiting, never forgotten)."""
        unmeasured = self.unmeasured
        return [p for p, pr in self.probes.items() if pr.waiting > 0 or p in unmeasured]

    def oldest_age_s(self, now: float | None = None) -> float | None:
        oldest_ms = [pr.oldest_waiting_ms for pr in self.probes.values() if pr.oldest_waiting_ms is not None]
        if not oldest_ms:
            return None
        return max(0.0, (time.time() if now is None else now) - min(oldest_ms) / 1000)


def probe_waiting(conf: dict[str, Any], topic: str, states: Mapping[int, CommittedState]) -> Waiting:
    """Compare the committed `states` with the broker's partitions of `topic` (one consumer)."""
    # Fresh for this probe: every watermark it has cached comes from this probe's fetch.
    consumer = Consumer({**conf, **PROBE_CONF})
    try:
        try:
            topic_md = topic_metadata(consumer, str(conf["bootstrap.servers"]), topic)
        except KafkaException as exc:
            raise TopicUnavailableError(f"the Kafka broker does not answer: {exc}") from None
        if topic_md is None or topic_md.error is not None:
            raise TopicUnavailableError(f"topic {topic!r} not found on the broker")
        committed: dict[int, int] = {}
        for p in sorted(topic_md.partitions):
            if p in states:
                committed[p] = states[p].next_offset
            else:  # never landed: the run starts at the partition's first record
                low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
                committed[p] = max(low, 0)
        behind = [p for p, s in states.items() if p in committed and not s.at_eof]
        # One fetch from every committed offset: each partition's exact end. An end below the
        # committed offset (the fetch's own high watermark) means the topic lost its history.
        probes = probe_committed(consumer, topic, committed)
        for p, pr in sorted(probes.items()):
            if pr.end is not None and pr.end < pr.committed:
                low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
                raise HistoryLostError(topic, p, pr.committed, max(low, 0), pr.end)
    finally:
        consumer.close()
    return Waiting(committed, probes, behind)
