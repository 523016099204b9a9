"""Reading exact offset ranges from Kafka partitions with `assign()`, in batches.

A landing run owns the ranges that start at the committed offsets. It reads each partition
from there until partition EOF or its cap, and the end of the range is what it actually read:
ListOffsets answers are only hints (Tansu answers the last *batch's* base offset + 1 for
batched produce). Reads never use a group subscription, so no rebalance can move a partition
mid-run; the group `flowsuite.<product>` only receives commits, so lag tools see progress.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from connectors.errors import TransientError
from connectors.formats.base import Batch
from connectors.kafka.stages import run_ahead

log = logging.getLogger(__name__)

# Settings a caller may not override: they are what makes a read an exact range.
_FIXED = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,
    # Starting outside the log must be an alarm, never a silent jump (DESIGN invariant 5).
    "auto.offset.reset": "error",
}
_DEFAULTS = {
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "queued.max.messages.kbytes": 64 * 1024,  # with the backoff below, 256 MiB fetched no faster
    "fetch.wait.max.ms": 100,
    # librdkafka stops fetching a partition whose local queue holds queued.min.messages
    # (100k) and looks again only after this backoff, 1 s by default: a reader faster than
    # the fetcher hits it on every run, and 300k records took 1.3 s instead of 0.35 s.
    # Memory stays bounded by the same thresholds; only the recheck comes sooner.
    "fetch.queue.backoff.ms": 10,
    "socket.keepalive.enable": True,
}


# consume() returns when it has num_messages *or* the timeout passed, even after partition
# EOF: a long timeout idles at the end of every range (1 s of a 1.4 s read of 200k records).
CONSUME_TIMEOUT_S = 0.05
PREFETCH_BATCHES = 4  # batches fetched ahead of the decoder: bounds memory


class KafkaReadError(TransientError, RuntimeError):
    """The broker could not serve the range (unreachable, unknown topic, fatal error)."""


class HistoryLostError(KafkaReadError):
    """A committed offset lies outside the partition's log: the topic lost its history.

    Happens when a memory broker restarts, a topic is deleted and recreated, or retention
    removed records that were never landed. flowsuite stops rather than skip or re-read.
    """

    transient = False  # retrying reads the same answer: a person must act

    def __init__(self, topic: str, partition: int, offset: int, low: int, high: int):
        self.topic, self.partition, self.offset, self.low, self.high = topic, partition, offset, low, high
        self.reset_to = "end" if offset > high else "start"  # the faces name their command for it
        where = "beyond the end" if offset > high else "before the start"
        super().__init__(
            f"committed offset {offset} of {topic}[{partition}] is {where} of the partition's log "
            f"(it holds offsets {low}..{high}); the topic lost its history (broker restarted on "
            f"memory storage, topic recreated, or retention). Nothing was read. To continue, "
            f"decide explicitly: reset the committed offset of partition {partition} to the "
            f"partition's {self.reset_to} (records in between are not landed)."
        )


def consumer_config(bootstrap: str, group_id: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A consumer configuration for exact reads; security settings in `extra` pass through."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "group.id": group_id, **_DEFAULTS}
    conf.update(extra or {})
    conf.update(_FIXED)
    return conf


@dataclass
class PartitionRead:
    """What was read of one partition: [start, end) and whether the read reached EOF."""

    partition: int
    start: int
    end: int
    reached_eof: bool = False
    records: int = 0


@dataclass
class RangeReader:
    """Reads [start, EOF or cap) of several partitions of one topic with one consumer.

    Iterate `batches()`; afterwards `reads` holds, per partition, the range actually read.
    """

    conf: dict[str, Any]
    topic: str
    starts: dict[int, int]
    max_records: dict[int, int] | None = None  # cap per partition
    batch_size: int = 10_000
    idle_timeout_s: float = 30.0
    with_headers: bool = False
    # A caller's consumer (one per landing run, also used for its metadata and group commit):
    # used from the fetch thread while `batches()` runs, unassigned afterwards, never closed here.
    consumer: Consumer | None = None
    reads: dict[int, PartitionRead] = field(default_factory=dict)

    def batches(self, cancelled: threading.Event | None = None) -> Iterator[Batch]:
        """Batches in offset order per partition. A background thread owns the consumer and
        keeps fetching while the caller decodes and writes (Arrow releases the GIL), so the
        broker's latency overlaps with the work instead of adding to it. `cancelled`: the
        stop event of the stage reading these batches, when that is a thread too."""
        stop = threading.Event()

        def fetch() -> Iterator[Batch]:
            own = self.consumer is None
            consumer = Consumer(self.conf) if own else self.consumer
            try:
                yield from self._read(consumer, stop)
            finally:
                try:
                    # Stop fetching: a caller's consumer would fill its queue with records
                    # nobody reads (up to queued.max.messages.kbytes) until it is closed.
                    if own:
                        consumer.close()
                    else:
                        consumer.unassign()
                except Exception:  # nothing is committed through this consumer
                    log.warning("closing the Kafka consumer of %s failed", self.topic, exc_info=True)

        return run_ahead(fetch, PREFETCH_BATCHES, f"fetch-{self.topic}", stop=stop, cancelled=cancelled)

    def _read(self, consumer: Consumer, stop: threading.Event | None = None) -> Iterator[Batch]:
        self.reads = {p: PartitionRead(p, s, s) for p, s in self.starts.items()}
        caps = {p: (self.max_records or {}).get(p) for p in self.starts}
        active = {p for p in self.starts if caps[p] is None or caps[p] > 0}
        if not active:
            return
        self._check_topic(consumer)
        consumer.assign([TopicPartition(self.topic, p, self.starts[p]) for p in sorted(active)])
        last_progress = time.monotonic()
        while active and not (stop is not None and stop.is_set()):
            messages = consumer.consume(num_messages=self.batch_size, timeout=CONSUME_TIMEOUT_S)
            if not messages:
                if time.monotonic() - last_progress > self.idle_timeout_s:
                    self._diagnose_stall(consumer, active)
                continue
            last_progress = time.monotonic()
            by_partition, eofs = self._group(messages, active, consumer)
            for p, msgs in by_partition.items():
                read = self.reads[p]
                cap = caps[p]
                if cap is not None and read.records + len(msgs) >= cap:
                    msgs = msgs[: cap - read.records]
                    active.discard(p)
                    consumer.pause([TopicPartition(self.topic, p)])
                if not msgs:
                    continue
                read.records += len(msgs)
                read.end = msgs[-1].offset() + 1
                yield Batch(
                    partition=p,
                    values=[m.value() for m in msgs],
                    keys=[m.key() for m in msgs],
                    offsets=[m.offset() for m in msgs],
                    timestamps=[m.timestamp()[1] for m in msgs],
                    headers=[m.headers() for m in msgs] if self.with_headers else None,
                )
            # End of partition counts only once the read got there: a cap may have cut this
            # batch short of the EOF event that came with it.
            for p, eof in eofs.items():
                if p in active and self.reads[p].end >= eof:
                    self.reads[p].reached_eof = True
                    active.discard(p)

    def _group(
        self, messages: list[Message], active: set[int], consumer: Consumer
    ) -> tuple[dict[int, list[Message]], dict[int, int]]:
        """Messages of active partitions by partition, and the offsets of end-of-partition
        events by partition; other error events raise here."""
        first, last = messages[0], messages[-1]
        if (
            first.error() is None
            and last.error() is None
            and first.partition() == last.partition()
            and first.partition() in active
            and last.offset() - first.offset() == len(messages) - 1
        ):
            # One partition, no gaps, no events (offsets are contiguous): the common case.
            return {first.partition(): messages}, {}
        by_partition: dict[int, list[Message]] = {}
        eofs: dict[int, int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                p = msg.partition()
                if err.code() == KafkaError._PARTITION_EOF:
                    eofs[p] = max(eofs.get(p, 0), msg.offset())
                    continue
                if err.code() in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET):
                    low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=False)
                    raise HistoryLostError(self.topic, p, self.reads[p].end, low, high)
                raise KafkaReadError(f"reading {self.topic}: {err.str()}")
            p = msg.partition()
            if p in active:
                by_partition.setdefault(p, []).append(msg)
        return by_partition, eofs

    def _check_topic(self, consumer: Consumer) -> None:
        try:
            # All topics, never one by name: Tansu auto-creates a topic looked up by name.
            md = consumer.list_topics(timeout=10)
        except KafkaException as exc:
            raise KafkaReadError(f"cannot reach the Kafka broker for topic {self.topic!r}: {exc}") from exc
        tmd = md.topics.get(self.topic)
        if tmd is None or tmd.error is not None:
            raise KafkaReadError(f"topic {self.topic!r} does not exist on the broker ({tmd.error if tmd else 'no metadata'})")
        missing = sorted(set(self.starts) - set(tmd.partitions))
        if missing:
            raise HistoryLostError(self.topic, missing[0], self.starts[missing[0]], 0, 0)
        for p, start in self.starts.items():
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10, cached=False)
            if start < low:
                raise HistoryLostError(self.topic, p, start, low, high)

    def _diagnose_stall(self, consumer: Consumer, active: set[int]) -> None:
        # Tansu (and some brokers) answer a fetch beyond the log with no error and no EOF;
        # the high watermark cached from that fetch tells the truth.
        for p in sorted(active):
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            if high >= 0 and self.reads[p].end > high:
                raise HistoryLostError(self.topic, p, self.reads[p].end, max(low, 0), high)
        raise KafkaReadError(
            f"no data and no end-of-partition from the broker for {self.topic} partitions "
            f"{sorted(active)} within {self.idle_timeout_s:.0f}s"
        )


@contextlib.contextmanager
def _borrowed(conf: dict[str, Any], consumer: Consumer | None) -> Iterator[Consumer]:
    """The caller's consumer, left open; or a fresh one, closed afterwards."""
    if consumer is not None:
        yield consumer
        return
    own = Consumer(conf)
    try:
        yield own
    finally:
        own.close()


def partitions_of(
    conf: dict[str, Any], topic: str, timeout: float = 10.0, consumer: Consumer | None = None
) -> list[int]:
    """The topic's partitions; a caller's `consumer` is used and left open."""
    with _borrowed(conf, consumer) as consumer:
        try:
            md = consumer.list_topics(timeout=timeout)  # never by name (Tansu auto-creates it)
        except KafkaException as exc:
            raise KafkaReadError(f"cannot reach the Kafka broker for topic {topic!r}: {exc}") from exc
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None:
            raise KafkaReadError(f"topic {topic!r} does not exist on the broker")
        return sorted(tmd.partitions)


@dataclass(frozen=True)
class PartitionProbe:
    partition: int
    committed: int
    end_hint: int  # from ListOffsets: a lower bound of the true end on Tansu
    end: int | None  # from a fetch: exact, when probed
    oldest_waiting_ms: int | None  # timestamp of the record at `committed`, when probed

    @property
    def waiting(self) -> int:
        return max(0, (self.end if self.end is not None else self.end_hint) - self.committed)


def probe_partitions(
    conf: dict[str, Any],
    topic: str,
    committed: Mapping[int, int],
    fetch: bool = True,
    timeout: float = 5.0,
    always_fetch: Collection[int] = (),
    consumer: Consumer | None = None,
) -> dict[int, PartitionProbe]:
    """End offsets (hint, then exact by one fetch where data waits) and the oldest waiting record.

    `committed` maps partition → next offset to land. A partition whose hint is past the
    committed offset, or that was never landed to its end, is fetched from the committed
    offset: the fetch response carries the exact high watermark and the first waiting
    record gives the age of the oldest unlanded data. Partitions in `always_fetch` (their last
    landing stopped before EOF) are fetched whatever the hint says. A caller's `consumer`
    (e.g. a sensor's one consumer per tick) is used and left open.
    """
    with _borrowed(conf, consumer) as consumer:
        hints: dict[int, int] = {}
        for p in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
            hints[p] = high
        to_fetch = {p: c for p, c in committed.items() if fetch and (hints[p] > c or p in always_fetch)}
        exact: dict[int, int] = {}
        oldest: dict[int, int] = {}
        if to_fetch:
            consumer.assign([TopicPartition(topic, p, c) for p, c in to_fetch.items()])
            deadline = time.monotonic() + timeout
            pending = set(to_fetch)
            while pending and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=len(pending) * 10, timeout=CONSUME_TIMEOUT_S):
                    p = msg.partition()
                    if p not in pending:
                        continue
                    if msg.error() is None:
                        oldest[p] = msg.timestamp()[1]
                    elif msg.error().code() != KafkaError._PARTITION_EOF:
                        continue
                    pending.discard(p)
            for p in to_fetch:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                if high >= 0:
                    exact[p] = high
        return {
            p: PartitionProbe(p, c, hints[p], exact.get(p), oldest.get(p)) for p, c in committed.items()
        }


def commit_group_offsets(
    conf: dict[str, Any], topic: str, offsets: Mapping[int, int], consumer: Consumer | None = None
) -> None:
    """Commit next-offsets to the consumer group so ordinary lag tools see flowsuite's progress.
    A caller's `consumer` (of that group) is used and left open."""
    if not offsets:
        return
    with _borrowed(conf, consumer) as consumer:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
