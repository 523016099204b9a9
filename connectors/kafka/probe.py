"""The sensor's exact probe: where every partition ends, by one fetch from the committed offsets.

A tick must know, for each partition, whether records wait past the committed offset, how
many, how old the oldest is, and whether the committed offset lies past the log's end (the
topic lost its history: an alarm, never "nothing waiting"). ListOffsets cannot tell: Tansu
answers the last *batch's* base offset + 1 for batched produce, below the true end, so a hint
below the committed offset is either that lag or a lost history.

The proof is one fetch from the committed offset of every partition at once, and nothing else
(no ListOffsets): each partition answers with
- partition EOF at the committed offset: the end is exactly the committed offset;
- a record: records wait; the fetch response that carried it set the client's cached high
  watermark (exact), and the record's timestamp is the oldest waiting one;
- neither, but its fetch response's high watermark is below the committed offset: the log
  ends before it — the history-lost alarm, on the broker's own word.
The consumer is made for the probe and closed after it, so every cached watermark it reads
came from this probe's fetches (a long-lived consumer could hold one from before a broker
restart and raise a false alarm, or miss a true one). It fetches one record per partition
and pauses each partition that answered, so waiting records are not downloaded.

The cluster's topic listing (Tansu answers one in 10-80 ms) is shared by every product's tick
in the process for METADATA_MAX_AGE_S; a topic missing from a cached listing asks again.

Measured (bench/sensor.py --prototype, interleaved rounds): 10 products x 12 partitions,
nothing waiting, 2.75 s → 0.285 s a tick of every product.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from connectors.kafka.reader import CONSUME_TIMEOUT_S, PartitionProbe

PROBE_CONF: dict[str, Any] = {
    "fetch.wait.max.ms": 10,  # a partition at its end answers at once, not after 100 ms
    # One record per partition is all a probe reads: fetch little, prefetch nothing more (the
    # broker still returns a whole first batch, whatever its size: KIP-74).
    "max.partition.fetch.bytes": 1024,
    "queued.min.messages": 1,
}
METADATA_MAX_AGE_S = 30.0

_listings: dict[str, tuple[float, dict[str, Any]]] = {}  # bootstrap → (when, topic metadata)
_listings_lock = threading.Lock()


def topic_metadata(consumer: Consumer, bootstrap: str, topic: str, timeout: float = 10.0):
    """The topic's metadata (None: no such topic) from a listing shared within the process.

    Lists every topic, never one by name (Tansu creates a topic looked up by name). A listing
    older than METADATA_MAX_AGE_S, or one without the topic, is refreshed."""
    with _listings_lock:
        cached = _listings.get(bootstrap)
    if cached and time.monotonic() - cached[0] < METADATA_MAX_AGE_S and topic in cached[1]:
        return cached[1][topic]
    topics = consumer.list_topics(timeout=timeout).topics
    with _listings_lock:
        _listings[bootstrap] = (time.monotonic(), topics)
    return topics.get(topic)


def probe_committed(
    consumer: Consumer, topic: str, committed: Mapping[int, int], timeout: float = 5.0
) -> dict[int, PartitionProbe]:
    """Exact end and oldest waiting record of each partition by one fetch from `committed`.

    `consumer` must be fresh (made with PROBE_CONF for this probe; see the module docstring).
    A partition that does not answer within `timeout` gets ListOffsets' hint and `end=None`.
    """
    pending = dict(committed)
    exact: dict[int, int] = {}
    oldest: dict[int, int] = {}
    if pending:
        consumer.assign([TopicPartition(topic, p, c) for p, c in pending.items()])
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=len(pending), timeout=CONSUME_TIMEOUT_S):
            p = msg.partition()
            if msg.topic() != topic or p not in pending:
                continue
            err = msg.error()
            if err is None:
                oldest[p] = msg.timestamp()[1]
                exact[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1]
            elif err.code() == KafkaError._PARTITION_EOF:
                exact[p] = msg.offset()
            else:
                continue
            del pending[p]
            consumer.pause([TopicPartition(topic, p)])  # answered: fetch no more of it
        for p, c in list(pending.items()):  # answered with nothing: does the log end before c?
            high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1]
            if 0 <= high < c:
                exact[p] = high
                del pending[p]
    hints = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)[1]
        for p in pending
    }
    return {
        p: PartitionProbe(p, c, exact.get(p, hints.get(p, -1)), exact.get(p), oldest.get(p))
        for p, c in committed.items()
    }
