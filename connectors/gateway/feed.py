"""One read and decode of a (product, partition) per gateway process, shared by every cursor at its head.

A `PartitionFeed` owns one consumer (`assign()`, never a group) of one partition and the
landing's decoder. It reads only while at least one cursor is attached, decodes each read once
into an `EventBatch` (the valid records as events, plus their attribute columns and indexes for
the filters, built lazily and once per batch) and offers the batch to every attached cursor.

A cursor (one subscription's delivery of this partition, worker.py) holds a bounded queue of
batches. The feed never waits for a cursor: a cursor whose queue is full (its receiver is slow,
hung, backing off, rate limited) is detached at once and catches up on its own — through one of
the gateway's bounded catch-up readers — from the first offset it has not been given, then
attaches again when it reaches the head. So a slow receiver holds back only its own cursor.

The feed keeps its last `RETAINED` batches: a cursor whose position is the start of one of
them (it started a moment after the feed, or detached only briefly) attaches at once and is
handed the retained batches from there, without a read of its own.

Batches are contiguous: each starts at the previous one's end (the first offset not read yet),
so a cursor that attaches at a batch boundary sees every offset exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from connectors.formats import Batch, decoder_for
from connectors.gateway.events import FlowEvent, events_from_batch, schema_url
from connectors.kafka import consumer_config
from connectors.kafka.reader import KafkaReadError
from connectors.spec import DataProductSpec

log = logging.getLogger(__name__)

READ_SIZE = 500  # records read at once
RETAINED = 16  # recent batches kept for cursors that attach a moment late
QUEUE_BATCHES = 32  # a cursor's bounded queue; a cursor that falls further behind is detached
LOW_MAX_AGE_S = 5.0  # a low watermark probed this recently is trusted (retention moves it slowly)


class EventBatch:
    """The valid records of one read of [start, end) as events, decoded once for every cursor.

    `column(attr)` (an Arrow string array of one attribute, null where an event lacks it) and
    `index(attr)` (attribute value → row numbers) are computed on first use and shared."""

    __slots__ = ("partition", "start", "end", "events", "_columns", "_indexes", "_lock")

    def __init__(self, partition: int, start: int, end: int, events: list[FlowEvent]):
        self.partition, self.start, self.end, self.events = partition, start, end, events
        self._columns: dict[str, Any] = {}
        self._indexes: dict[str, dict[str, list[int]]] = {}
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.events)

    def column(self, attr: str):
        col = self._columns.get(attr)
        if col is None:
            import pyarrow as pa

            with self._lock:
                col = self._columns.get(attr)
                if col is None:
                    col = pa.array([e.attributes.get(attr) for e in self.events], pa.string())
                    self._columns[attr] = col
        return col

    def index(self, attr: str) -> dict[str, list[int]]:
        idx = self._indexes.get(attr)
        if idx is None:
            with self._lock:
                idx = self._indexes.get(attr)
                if idx is None:
                    idx = {}
                    for i, e in enumerate(self.events):
                        v = e.attributes.get(attr)
                        if v is not None:
                            idx.setdefault(v, []).append(i)
                    self._indexes[attr] = idx
        return idx


class Detached(Exception):
    """The cursor's queue ran full: it was detached from the feed and catches up on its own."""


class CursorQueue:
    """A cursor's bounded queue of batches; `closed` once the feed detached it.

    `wants(batch)` (the cursor's filters and policy: does the batch hold an event for it?) is
    asked on the feed's thread; a batch it does not want is not queued and does not wake the
    cursor — the offsets it covers are kept as one range (`passed`) that goes to the cursor as an
    empty batch ahead of the next wanted one, or when its take() times out, so its position still
    moves. With 1,000 partner subscriptions each wanting a thousandth of the events, the cursors
    wake for their own events, not for every batch. A cursor idle in take() (`idle`: nothing
    queued, nothing in hand) does not wake to move past a range either: the gateway's bookkeeper
    takes the range from it (`take_passed`) and moves the cursor's position itself."""

    def __init__(self, limit: int | None = None, wants=None):
        self.limit = QUEUE_BATCHES if limit is None else limit
        self.items: deque[EventBatch] = deque()
        self.closed = False
        self.cond = threading.Condition()
        self.wants = wants
        self.passed: EventBatch | None = None  # offsets passed over, nothing in them for this cursor
        self.idle = False  # a take() waits with nothing queued: the cursor holds nothing undelivered

    def _wanted(self, batch: EventBatch) -> bool:
        if self.wants is None:
            return True
        if not batch.events:
            return False
        try:
            return bool(self.wants(batch))
        except Exception:  # noqa: BLE001 - the cursor finds out itself (and says why) when it selects
            return True

    def offer(self, batch: EventBatch) -> bool:
        wanted = self._wanted(batch)
        with self.cond:
            if self.closed:
                return False
            if not wanted:
                start = batch.start if self.passed is None else self.passed.start
                self.passed = EventBatch(batch.partition, start, batch.end, [])
                return True
            if len(self.items) >= self.limit:
                self.closed = True
                self.cond.notify_all()
                return False
            if self.passed is not None:
                self.items.append(self.passed)
                self.passed = None
            self.items.append(batch)
            self.cond.notify_all()
            return True

    def take(self, timeout: float) -> EventBatch | None:
        """The next batch, None after `timeout`; raises Detached when the queue is empty and closed."""
        with self.cond:
            if not self.items and not self.closed:
                self.idle = True
                try:
                    self.cond.wait(timeout)
                finally:
                    self.idle = False
            if self.items:
                return self.items.popleft()
            if self.passed is not None:
                passed, self.passed = self.passed, None
                return passed
            if self.closed:
                raise Detached()
            return None

    def take_passed(self, start: int, moved) -> bool:
        """While the cursor waits idle in take() at `start`, hand the range passed over from
        there to `moved(end)` (called under the queue's lock, so the cursor wakes to the moved
        position) instead of waking the cursor; False when it is not idle there."""
        with self.cond:
            passed = self.passed
            if not self.idle or self.items or passed is None or passed.start != start:
                return False
            self.passed = None
            moved(passed.end)
            return True

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def poll(self, start: int) -> EventBatch | None:
        """The next batch without waiting, if one is queued (or passed over) and starts at `start`."""
        with self.cond:
            if self.items:
                return self.items.popleft() if self.items[0].start == start else None
            if self.passed is not None and self.passed.start == start:
                passed, self.passed = self.passed, None
                return passed
            return None

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def read_batch(spec: DataProductSpec, partition: int, decoder, msgs: list, start: int,
               dataschema: str | None = None) -> EventBatch | None:
    """The records of one consume() as a batch starting at `start` (the reader's position).
    A decoder that reads headers (binary-mode CloudEvents: CDC products' `ce_*`) is given
    them, as the landing and pull delivery give them; `dataschema` goes on every event."""
    records = []
    for m in msgs:
        err = m.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaReadError(f"reading {spec.topic}[{partition}]: {err}")
        if m.offset() >= start:  # never hand out an offset twice
            records.append(m)
    if not records:
        return None
    decoded = decoder.decode(Batch(
        partition, [m.value() for m in records], [m.key() for m in records],
        [m.offset() for m in records], [m.timestamp()[1] for m in records],
        [m.headers() for m in records] if decoder.needs_headers else None,
    ))
    events = events_from_batch(spec, partition, {m.offset(): m for m in records}, decoded.valid, dataschema)
    return EventBatch(partition, start, records[-1].offset() + 1, events)


def partition_consumer(spec: DataProductSpec, partition: int, bootstrap: str, group: str,
                       kafka_config: dict[str, Any], offset: int) -> Consumer:
    conf = consumer_config(bootstrap, group, {
        **kafka_config,
        "queued.max.messages.kbytes": 2048, "fetch.max.bytes": 4 * 1024 * 1024,
        "max.partition.fetch.bytes": 1024 * 1024, "fetch.wait.max.ms": 20,
    })
    consumer = Consumer(conf)
    consumer.assign([TopicPartition(spec.topic, partition, offset)])
    return consumer


class PartitionFeed(threading.Thread):
    """The shared reader of one (product, partition) in one gateway process."""

    def __init__(self, spec: DataProductSpec, partition: int, bootstrap: str, kafka_config: dict[str, Any] | None = None,
                 dataschema: str | None = None):
        super().__init__(name=f"feed-{spec.name}-p{partition}", daemon=True)
        self.spec, self.partition, self.bootstrap, self.dataschema = spec, partition, bootstrap, dataschema
        self.kafka_config = kafka_config or {}
        self.decoder = decoder_for(spec)
        self.lock = threading.Condition()
        self.cursors: set[CursorQueue] = set()
        self.head: int | None = None  # the first offset not read yet; None: nowhere yet
        self.recent: deque[EventBatch] = deque(maxlen=RETAINED)
        self.reads = 0  # reads decoded (benchmarks and tests compare it with the cursors' batches)
        self.detaches = 0
        self._seek: int | None = None
        self._stopping = threading.Event()
        self._low: tuple[float, int] | None = None  # (monotonic time, low watermark) of the last probe
        self._low_lock = threading.Lock()

    def low_watermark(self, max_age_s: float = LOW_MAX_AGE_S) -> int:
        """The partition's first offset the broker still holds, probed at most every `max_age_s`
        for every cursor of the process (each cursor probing on its own was a consumer per
        (subscription, partition): minutes of start-up at 1,000 subscriptions)."""
        with self._low_lock:
            if self._low is not None and time.monotonic() - self._low[0] <= max_age_s:
                return self._low[1]
            probe = partition_consumer(self.spec, self.partition, self.bootstrap,
                                       f"flowsuite.flow.feed.{self.spec.name}", self.kafka_config, 0)
            try:
                low = probe.get_watermark_offsets(TopicPartition(self.spec.topic, self.partition), timeout=10,
                                                  cached=False)[0]
            finally:
                probe.close()
            self._low = (time.monotonic(), low)
            return low

    def attach(self, queue: CursorQueue, position: int) -> bool:
        """Attach a cursor whose next offset is `position`; False when the feed is elsewhere
        (the cursor then reads on its own and tries again)."""
        with self.lock:
            if self._stopping.is_set():
                return False
            if not self.cursors and position != self.head:  # nobody to disturb: go where the cursor is
                self._seek, self.head = position, position
                self.recent.clear()
            if position != self.head:
                starts = [b.start for b in self.recent]
                if position not in starts or len(self.recent) - starts.index(position) > queue.limit // 2:
                    return False
                for b in list(self.recent)[starts.index(position):]:
                    queue.items.append(b)
            self.cursors.add(queue)
            self.lock.notify_all()
            return True

    def detach(self, queue: CursorQueue) -> None:
        with self.lock:
            self.cursors.discard(queue)
        queue.close()

    def stop(self) -> None:
        self._stopping.set()
        with self.lock:
            for q in self.cursors:
                q.close()
            self.cursors.clear()
            self.lock.notify_all()

    def run(self) -> None:
        consumer: Consumer | None = None
        try:
            while not self._stopping.is_set():
                with self.lock:
                    while not self.cursors and not self._stopping.is_set():
                        self.lock.wait(0.5)
                    if self._stopping.is_set():
                        return
                    seek, self._seek = self._seek, None
                    head = self.head
                if seek is not None or consumer is None:
                    if consumer is not None:
                        consumer.close()  # a fresh consumer: nothing fetched from the old position survives
                    consumer = partition_consumer(self.spec, self.partition, self.bootstrap,
                                                  f"flowsuite.flow.feed.{self.spec.name}", self.kafka_config, head)
                try:
                    msgs = consumer.consume(num_messages=READ_SIZE, timeout=0.1)
                    batch = (read_batch(self.spec, self.partition, self.decoder, msgs, head, self.dataschema)
                             if msgs else None)
                except Exception:  # the cursors catch up on their own meanwhile
                    log.warning("feed %s[%d]: read failed; reading again", self.spec.topic, self.partition, exc_info=True)
                    self._detach_all()
                    consumer.close()
                    consumer = None
                    self._stopping.wait(0.5)
                    continue
                if batch is None:
                    continue
                with self.lock:
                    if self._seek is not None or self.head != head:
                        continue  # moved while reading (a new first cursor): this read is not theirs
                    self.reads += 1
                    self.head = batch.end
                    self.recent.append(batch)
                    for q in list(self.cursors):
                        if not q.offer(batch):
                            self.cursors.discard(q)
                            self.detaches += 1
        finally:
            if consumer is not None:
                consumer.close()

    def _detach_all(self) -> None:
        with self.lock:
            for q in self.cursors:
                q.close()
            self.detaches += len(self.cursors)
            self.cursors.clear()


class Feeds:
    """The gateway process's feeds, one per (product, partition), started on first use, and
    the bound on catch-up readers (cursors behind the head reading on their own)."""

    def __init__(self, bootstrap: str, kafka_config: dict[str, Any] | None = None, catchup_readers: int = 8,
                 public_url: str | None = None):
        self.bootstrap, self.kafka_config, self.public_url = bootstrap, kafka_config or {}, public_url
        self.catchup = threading.BoundedSemaphore(catchup_readers)
        self.feeds: dict[tuple[str, int], PartitionFeed] = {}
        self.lock = threading.Lock()

    def feed(self, spec: DataProductSpec, partition: int) -> PartitionFeed:
        with self.lock:
            key = (spec.name, partition)
            feed = self.feeds.get(key)
            if feed is None or not feed.is_alive():
                feed = PartitionFeed(spec, partition, self.bootstrap, self.kafka_config,
                                     schema_url(self.public_url, spec))
                feed.start()
                self.feeds[key] = feed
            return feed

    def stop(self, timeout: float = 5.0) -> None:
        with self.lock:
            feeds = list(self.feeds.values())
        for f in feeds:
            f.stop()
        deadline = time.monotonic() + timeout
        for f in feeds:
            f.join(max(0.1, deadline - time.monotonic()))
