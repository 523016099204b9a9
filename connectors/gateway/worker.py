"""Delivery of one Kafka partition to one subscription: the unit a gateway claims.

A `PartitionDelivery` holds the claim (subscription, partition) in `fs_claims` and renews its
lease. It is a cursor on the partition: while its position is at the head of the gateway's
shared `PartitionFeed` (feed.py: one read and decode per (product, partition) per process) it
takes the feed's decoded batches from a bounded queue; when it is behind (a new subscription,
a replay, a slow receiver whose queue ran full) it reads on its own with `assign()` from its
position, holding one of the gateway's bounded catch-up readers, and attaches to the feed
again when it reaches the head. Of each batch it keeps the events inside the subscription's
filters and its product's policy (evaluated on the batch's columns, policy.batch_selector) and
sends them in order: one request in flight (a single event in binary or structured mode, up to
`maxbatch` events in batched mode). `config.ordered: false` allows up to `maxinflight` requests
at once. The position moves (compare-and-set, only while the claim is ours) after the receiver
answered 2xx to everything before it — so a crash re-sends at most the events since the last
commit, with the same ids, and never skips one.

Failures: backoff with jitter up to the cap, `Retry-After` honoured; past the subscription's
TTL the events go to `<topic>.flow.<id>.dlq` (with attempts and the last outcome) and an
ordered subscription is paused; 400/413/415 go there at once; 410 retires the subscription.
While retrying, the cursor takes nothing: its feed queue runs full and is detached (the feed
never waits for it), and a catch-up read of its own is paused in its consumer, so a slow
receiver costs no memory beyond its bounded queue of shared batches or one read.

The metastore is kept off the sending path: the gateway's one bookkeeper (delivery_books.py)
re-reads every delivery's subscription (still active? position moved by a replay?) every
0.25 s, renews all the process's leases every lease/4 in one statement (0.5 s with the default
2 s lease: a heartbeat, so a killed gateway's work moves within ~3 s), and commits every
delivery's position through what was delivered in one transaction. The sending thread trusts
a state at most 1 s old and waits, sending nothing, when the metastore is slower than that.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from connectors.errors import TransientError
from connectors.formats import decoder_for
from connectors.gateway.delivery_books import STATE_CHECK_S, DeliveryBooks
from connectors.gateway.events import (
    FlowEvent,
    batch_request,
    binary_request,
    schema_url,
    structured_request,
)
from connectors.gateway.feed import (
    CursorQueue,
    Detached,
    EventBatch,
    PartitionFeed,
    partition_consumer,
    read_batch,
)
from connectors.gateway.history import HISTORY_FORMATS, events_from_history, lake_span, read_history
from connectors.gateway.policy import batch_selector
from connectors.gateway.sender import Outcome, RateLimiter, Sender, backoff
from connectors.gateway.settings import GatewaySettings
from connectors.gateway.store import GatewayStore, Subscription, claim_product, claim_resource
from connectors.kafka import ensure_topic
from connectors.lake import Lake
from connectors.spec import DataProductSpec

log = logging.getLogger(__name__)

STATE_STALE_S = 1.0  # a state older than this is waited for before anything is sent
TAKE_WAIT_S = 5.0  # a cursor with nothing to send wakes this often; the bookkeeper moves it past what it passed
# over meanwhile (DeliveryBooks.IDLE_MOVE_S) and wakes it at once when it must stop
READ_SIZE = 500  # records read at once (filtering is cheap; the in-flight window is what was sent)


def dlq_topic_of(spec: DataProductSpec, sub_id: str) -> str:
    return f"{spec.topic}.flow.{sub_id}.dlq"


class DeadLetterNotAcknowledged(TransientError, RuntimeError):
    """The broker did not acknowledge an event sent to the dead-letter topic: the position does
    not move past it, and the delivery is taken up again (the event is tried once more)."""


class Stopped(Exception):
    """The delivery must stop: claim lost, subscription no longer active, gateway stopping.
    `commit_to`: the position everything before which is done (delivered or dead-lettered)."""

    def __init__(self, why: str, commit_to: int | None = None):
        super().__init__(why)
        self.commit_to = commit_to


@dataclass(frozen=True)
class GatewayParts:
    """What every delivery of one gateway process shares, built once per gateway (gateway.py):
    the metastore side, the settings, the pooled sender, the broker, the bounded catch-up
    readers, the lake for history below the broker's low watermark, and the bookkeeper (None:
    a delivery runs one of its own, as a test of one delivery does)."""

    store: GatewayStore
    settings: GatewaySettings
    sender: Sender
    bootstrap: str
    gateway_id: str
    kafka_config: dict[str, Any] = field(default_factory=dict)
    catchup: threading.BoundedSemaphore | None = None
    lake: Lake | None = None
    books: DeliveryBooks | None = None


class PartitionDelivery(threading.Thread):
    def __init__(
        self, parts: GatewayParts, spec: DataProductSpec, sub: Subscription, partition: int, owner: str,
        limiter: RateLimiter, feed: PartitionFeed | None = None, start_at: tuple[int, int | None] | None = None,
    ):
        """One (subscription, partition) claimed as `owner`; `limiter` is its subscription's rate
        limit, `feed` the gateway's shared feed of the partition (None: it reads on its own),
        `start_at` (position, not_before_ms) as read right after the claim (None: read here)."""
        super().__init__(name=f"flow-{sub.id[:8]}-p{partition}", daemon=True)
        self.parts = parts
        self.store, self.spec, self.sub, self.partition = parts.store, spec, sub, partition
        self.bootstrap, self.settings, self.sender, self.limiter = parts.bootstrap, parts.settings, parts.sender, limiter
        self.owner, self.gateway_id, self.kafka_config = owner, parts.gateway_id, parts.kafka_config
        settings = parts.settings
        self.opts = sub.options  # typed config (models.SubscriptionOptions), parsed once
        self.ttl_s = self.opts.ttl_s(settings.ttl_s)
        self.dataschema = schema_url(settings.public_url, spec)  # as pull delivery names it
        self.stop_event = threading.Event()
        self.decoder = decoder_for(spec)
        self.lease_renewed_at = time.monotonic()
        self.sent_requests = 0
        self.position = 0
        self.stored_not_before: int | None = None
        self.consumer: Consumer | None = None
        self.tp: TopicPartition | None = None
        self.paused = False
        self.done_through = 0  # everything before this offset was delivered, dead-lettered or skipped
        self.clear_not_before = False
        self.unrecorded = 0  # events delivered (2xx) not yet counted in the metastore
        self.last_ok = "HTTP 200"
        self.count_lock = threading.Lock()
        self.commit_lock = threading.Lock()
        self.books = parts.books  # the gateway's bookkeeper (delivery_books.py); None: one of its own
        self.start_at = start_at  # (position, not_before_ms) read after the claim; None: read it here
        self.stop_reason: str | None = None
        self.leave_claim = False  # stop(hand_back=True): released by the gateway, in one batch
        self.state_ok_at = 0.0
        self._keep = None
        self._producer: Producer | None = None
        self.feed, self.catchup, self.lake = feed, parts.catchup, parts.lake
        self.history: Iterator[EventBatch] | None = None  # a catch-up read from the lake
        self.low_checked = False
        self.queue: CursorQueue | None = None  # attached to the feed while not None
        self.holds_slot = False
        self.read_at = 0
        self.detached = 0  # times it fell behind the feed
        self.catchup_reads = 0  # reads of its own (behind the head)

    @property
    def claim_unit(self) -> tuple[str, str, str]:
        """(product, resource, owner) of this delivery's claim in fs_claims."""
        return claim_product(self.sub.id), claim_resource(self.partition), self.owner

    # --- guards ---------------------------------------------------------------------------

    def stop(self, hand_back: bool = False) -> None:
        """Stop delivering. `hand_back`: the gateway is stopping and releases this delivery's
        claim with all the others in one transaction (Gateway.stop) once it has ended, so it
        does not release it on its own; otherwise (a rebalance) it releases it as it ends."""
        self.leave_claim = hand_back
        self.stop_event.set()
        if self.books is not None:  # waiting in _guard for a cycle: wake it now
            self.books.wake()
        self.wake()

    def wake(self) -> None:
        """Wake the cursor if it waits in take() (a stop, or a stop_reason the bookkeeper set)."""
        q = self.queue
        if q is not None:
            q.wake()

    def move_idle(self) -> bool:
        """The bookkeeper's part of an idle cursor (waiting in take(), everything before `read_at`
        done): move `read_at` and `done_through` past the range the feed passed over for it, so
        it need not wake to do so. True when it moved."""
        q = self.queue
        if q is None:
            return False
        at = self.read_at

        def moved(end: int) -> None:
            with self.count_lock:
                if self.done_through == at:
                    self.done_through = end
            self.read_at = end

        with self.count_lock:
            if self.done_through != at:
                return False
        return q.take_passed(at, moved)

    def _guard(self) -> None:
        """Raise Stopped unless the claim is ours and the subscription is still active, as the
        bookkeeping thread last saw them (at most STATE_STALE_S ago, else wait for it)."""
        while True:
            if self.stop_event.is_set():
                raise Stopped("gateway stopping")
            if self.stop_reason is not None:
                raise Stopped(self.stop_reason)
            if time.monotonic() - self.state_ok_at <= STATE_STALE_S:
                return
            # the metastore is slow to answer: send nothing meanwhile, and wait for the bookkeeper's
            # next cycle rather than polling (2,000 deliveries polling every 20 ms kept the GIL
            # from the bookkeeper itself, whose cycle then outlasted the leases)
            self.books.wait_cycle(STATE_CHECK_S) if self.books is not None else self.stop_event.wait(0.02)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self._guard()
            left = end - time.monotonic()
            if left <= 0:
                return
            self.stop_event.wait(min(left, STATE_CHECK_S))

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Stopped as why:
            log.info("flow %s partition %d stops: %s", self.sub.id, self.partition, why)
        except Exception:  # one partition's failure must not kill the gateway
            log.exception("flow %s partition %d failed; another attempt follows", self.sub.id, self.partition)
        finally:
            try:
                if not self.leave_claim:  # else the stopping gateway releases it with the others
                    self.store.metastore.release(*self.claim_unit)
            except Exception:  # noqa: BLE001
                log.warning("releasing the claim of %s/%d failed; its lease runs out", self.sub.id, self.partition)
            if self._producer is not None:
                self._producer.flush(10)

    def _run(self) -> None:
        if self.start_at is None:
            self.start_at = self.store.positions(self.sub.id).get(self.partition, (0, None))
        self.position, not_before = self.start_at
        self.stored_not_before = not_before
        self.read_at = self.position  # the first offset not taken from the feed or read yet
        own_books = self.books is None
        if own_books:
            self.books = DeliveryBooks(self.store, self.settings.lease_s)
            self.books.start()
        self.state_ok_at = time.monotonic()  # just read by the gateway's claim
        self.books.register(self)
        try:
            while True:
                self._guard()
                batch = self._next_batch()
                if batch is None:
                    continue
                self.read_at = batch.end
                events = self._select(batch)
                events, end = self._more_queued(events, batch.end)
                if not_before is not None:  # startfrom time: Kafka's offsets_for_times, by event time
                    kept = []
                    for ev in events:
                        if not_before is not None:
                            if ev.time_ms is None or ev.time_ms < not_before:
                                continue
                            not_before = None
                        kept.append(ev)
                    events = kept
                try:
                    self._deliver(events)
                except Stopped as stop:
                    if stop.commit_to is not None:
                        self._commit(stop.commit_to, clear_not_before=False)
                    raise
                finally:
                    self._fetching(True)
                with self.count_lock:
                    if self.stored_not_before is not None and not_before is None:
                        self.clear_not_before = True
                    self.done_through = end
        finally:
            self.books.unregister(self)
            if own_books:
                self.books.stop()
            try:
                self._flush()  # delivered before the stop: committed, so not sent again
            except Exception:  # noqa: BLE001 - claim lost: the next owner re-sends, at least once
                pass
            self._leave()

    # --- where batches come from: the shared feed at the head, or a catch-up read ----------

    def _next_batch(self) -> EventBatch | None:
        """The next batch from `read_at` on: from the feed's queue while attached; otherwise
        read on its own (holding one of the gateway's catch-up readers) until it reaches the
        feed's head, where it attaches again."""
        if self.queue is not None:
            try:
                batch = self.queue.take(TAKE_WAIT_S)
            except Detached:
                self.queue = None  # fell behind: catch up on its own from read_at
                self.detached += 1
                return None
            if batch is None or batch.start == self.read_at:
                return batch
            log.warning("flow %s partition %d: feed batch at %d, expected %d; catching up on its own",
                        self.sub.id, self.partition, batch.start, self.read_at)
            self.feed.detach(self.queue)
            self.queue = None
            return None
        if not self.low_checked:  # once per start: a position the broker no longer holds is the lake's
            self.low_checked = True
            self._below_broker()
        if self.history is not None:  # below the broker's low watermark: the lake's sealed hours
            if not self._catchup_slot():
                return None
            batch = next(self.history, None)
            if batch is None:
                self.history = None  # through the low watermark: Kafka from here, no gap, no double
            return batch
        if self.feed is not None and self.feed.attach(q := CursorQueue(wants=self._select), self.read_at):
            self._close_catchup()
            self.queue = q
            return None
        if self.consumer is None:
            if not self._catchup_slot():
                return None
            self.consumer = partition_consumer(self.spec, self.partition, self.bootstrap,
                                               f"flowsuite.flow.{self.sub.id}", self.kafka_config, self.read_at)
            self.tp = TopicPartition(self.spec.topic, self.partition, self.read_at)
            self.paused = False
        msgs = self.consumer.consume(num_messages=max(self.opts.events_per_request * 4, READ_SIZE), timeout=0.1)
        if not msgs:
            return None
        self.catchup_reads += 1
        return read_batch(self.spec, self.partition, self.decoder, msgs, self.read_at, self.dataschema)

    def _more_queued(self, events: list[FlowEvent], end: int) -> tuple[list[FlowEvent], int]:
        """Add the batches already waiting in the feed queue (contiguous, in order) to what is
        sent next, up to one request's worth (or a read's in binary mode): a cursor whose
        receiver answers slower than the feed reads sends fewer, fuller requests instead of
        falling behind one small batch at a time until it is detached."""
        if self.queue is None:
            return events, end
        want = max(self.opts.events_per_request, READ_SIZE)
        merged = list(events)
        while len(merged) < want:
            nxt = self.queue.poll(end)
            if nxt is None:
                break
            if nxt.events:
                merged += self._select(nxt)
            end = self.read_at = nxt.end
        return merged, end

    def _below_broker(self) -> bool:
        """True (and `history` set) when `read_at` is below the partition's low watermark and the
        lake holds everything from there to it (history.py): the events come from the lake's live
        files then — same ids, sequences and attributes as from Kafka, `data` the landed record
        as JSON — and Kafka takes over at the low watermark. Without a lake, or when the lake
        does not reach, the read goes to Kafka as before, with a warning naming both ranges
        (a real Kafka then fails the read: auto.offset.reset is `error`)."""
        if self.lake is None or self.spec.format not in HISTORY_FORMATS:
            return False
        if self.feed is not None:  # one probe per (product, partition) for every cursor, at most every 5 s
            low = self.feed.low_watermark()
        else:
            probe = partition_consumer(self.spec, self.partition, self.bootstrap, f"flowsuite.flow.{self.sub.id}",
                                       self.kafka_config, self.read_at)
            try:
                low = probe.get_watermark_offsets(TopicPartition(self.spec.topic, self.partition), timeout=10,
                                                  cached=False)[0]
            finally:
                probe.close()
        if self.read_at >= low:
            return False
        span = lake_span(self.store.metastore, self.spec.name, self.partition)
        if span is None or span.first > self.read_at or span.end < low:
            holds = "none of it" if span is None else f"{span.first}..{span.end - 1}"
            log.warning("flow %s partition %d: position %d is below the broker's low watermark %d and the lake "
                        "holds %s", self.sub.id, self.partition, self.read_at, low, holds)
            return False
        self.history = self._history(self.read_at, low)
        return True

    def _history(self, start: int, low: int) -> Iterator[EventBatch]:
        at = start
        for table in read_history(self.lake, self.store.metastore, self.spec, self.partition, start, low,
                                  max_rows=READ_SIZE):
            end = table.column("_offset")[-1].as_py() + 1
            self.catchup_reads += 1
            yield EventBatch(self.partition, at, end, events_from_history(self.spec, self.partition, table, self.dataschema))
            at = end
        if at < low:  # the rest of the window landed nothing (quarantined): passed over, as from Kafka
            yield EventBatch(self.partition, at, low, [])

    def _catchup_slot(self) -> bool:
        if self.catchup is None or self.holds_slot:
            return True
        if self.catchup.acquire(timeout=0.1):
            self.holds_slot = True
            return True
        return False

    def _close_catchup(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer, self.tp, self.paused = None, None, False
        if self.holds_slot:
            self.holds_slot = False
            self.catchup.release()

    def _leave(self) -> None:
        if self.queue is not None and self.feed is not None:
            self.feed.detach(self.queue)
            self.queue = None
        self._close_catchup()

    def _flush(self) -> None:
        """Commit the position through everything delivered (or skipped) so far."""
        with self.count_lock:
            through, clear = self.done_through, self.clear_not_before
        if through > self.position:
            self._commit(through, clear_not_before=clear)
            if clear:
                with self.count_lock:
                    self.stored_not_before, self.clear_not_before = None, False

    def _fetching(self, on: bool) -> None:
        """The cursor is paused while its receiver is failing: it takes nothing from the feed (its
        queue runs full and is detached, the feed goes on) and a catch-up read of its own is
        paused in its consumer, so nothing more is fetched for it (librdkafka's queue is bounded
        anyway: queued.max.messages.kbytes)."""
        if on != self.paused:
            return
        if self.consumer is not None:
            (self.consumer.resume if on else self.consumer.pause)([self.tp])
        self.paused = not on

    def _select(self, batch: EventBatch) -> list[FlowEvent]:
        """The batch's events inside the subscription's filters and policy (evaluated on the
        batch's columns and indexes, shared by every cursor); rebuilt when the body changes."""
        sub = self.sub
        if self._keep is None or self._keep[0] != (sub.org, sub.body):
            self._keep = ((sub.org, sub.body), batch_selector(self.spec, sub.org, sub.body))
        return self._keep[1](batch)

    def _commit(self, next_offset: int, clear_not_before: bool = False) -> None:
        """Move the position (only forward, only while the claim is ours)."""
        with self.commit_lock:
            if next_offset <= self.position:
                return
            with self.count_lock:
                delivered, self.unrecorded = self.unrecorded, 0
            if not self.store.commit_position(self.sub.id, self.partition, self.position, next_offset, self.owner,
                                              clear_not_before, delivered, self.last_ok):
                raise Stopped("claim or position moved")
            self.position = next_offset

    def _units(self, events: list[FlowEvent]) -> list[list[FlowEvent]]:
        size = self.opts.events_per_request
        return [events[i:i + size] for i in range(0, len(events), size)]

    def _deliver(self, events: list[FlowEvent]) -> None:
        units = self._units(events)
        if self.opts.requests_in_flight <= 1:
            for unit in units:
                self._deliver_unit(unit)
                with self.count_lock:  # the bookkeeper commits through here: a small re-send window
                    self.done_through = max(self.done_through, unit[-1].offset + 1)
            return
        with ThreadPoolExecutor(self.opts.requests_in_flight) as pool:
            for f in [pool.submit(self._deliver_unit, u) for u in units]:
                f.result()

    def _request(self, unit: list[FlowEvent]) -> tuple[str, dict[str, str], bytes]:
        mode = self.opts.mode
        if mode == "batched":
            headers, body = batch_request(unit)
            return f"batch-{unit[0].id}-to-{unit[-1].offset}", headers, body
        headers, body = (structured_request if mode == "structured" else binary_request)(unit[0])
        return unit[0].id, headers, body

    def _deliver_unit(self, unit: list[FlowEvent]) -> None:
        msg_id, headers, body = self._request(unit)
        first_try = time.monotonic()
        attempt = 0
        while True:
            self._guard()
            self.limiter.wait(self.stop_event)
            self._guard()
            outcome = self.sender.send(self.sub.body, self.sub.signing_secrets(), msg_id, headers, body)
            attempt += 1
            self.sent_requests += 1
            if outcome.kind == "ok":
                if attempt > 1:  # the end of a failure streak is recorded at once
                    self.store.record_attempt(self.sub.id, outcome.detail, True, delivered=len(unit))
                else:  # counted with the next position commit: one write per commit, not per request
                    with self.count_lock:
                        self.unrecorded += len(unit)
                        self.last_ok = outcome.detail
                return
            self.store.record_attempt(self.sub.id, outcome.detail, False)
            if outcome.kind == "retire":
                self.store.transition(self.sub.id, "retired", ["active", "paused"], outcome.detail)
                raise Stopped("retired by the receiver (410)")
            if outcome.kind == "dead":
                self._dead_letter(unit, attempt, outcome)
                return
            pause = backoff(attempt, self.settings.retry_base_s, self.settings.retry_cap_s)
            if outcome.retry_after is not None:
                pause = max(outcome.retry_after, 0.0)
            if time.monotonic() + pause - first_try > self.ttl_s:
                self._dead_letter(unit, attempt, outcome)
                if self.opts.ordered:
                    self.store.transition(
                        self.sub.id, "paused", ["active"],
                        f"paused after dead-lettering {len(unit)} event(s) at offset {unit[0].offset} "
                        f"past the TTL ({outcome.detail}); resume to continue",
                    )
                    raise Stopped("paused after a dead letter", commit_to=unit[-1].offset + 1)
                return
            log.info("flow %s partition %d: %s; retry in %.1f s", self.sub.id, self.partition, outcome.detail, pause)
            self._fetching(False)
            self._sleep(pause)

    def _dead_letter(self, unit: list[FlowEvent], attempts: int, outcome: Outcome) -> None:
        topic = dlq_topic_of(self.spec, self.sub.id)
        if self._producer is None:
            ensure_topic(self.bootstrap, topic, 1, kafka_config=self.kafka_config)
            self._producer = Producer({**self.kafka_config, "bootstrap.servers": self.bootstrap,
                                       "enable.idempotence": True, "acks": "all"})
        failures: list[str] = []
        for ev in unit:
            self._producer.produce(
                topic, value=ev.data, key=(ev.attributes.get("partitionkey") or "").encode() or None,
                headers=[
                    ("flowsuite.flow.subscription", self.sub.id.encode()),
                    ("flowsuite.flow.attempts", str(attempts).encode()),
                    ("flowsuite.flow.outcome", outcome.detail.encode()),
                    *[(f"ce_{k}", v.encode()) for k, v in ev.attributes.items()],
                ],
                on_delivery=lambda err, _m: failures.append(str(err)) if err else None,
            )
        if self._producer.flush(30) or failures:
            raise DeadLetterNotAcknowledged(f"dead letter to {topic} not acknowledged: {failures[:1]}")
        self.store.record_attempt(self.sub.id, f"dead-lettered after {attempts} attempt(s): {outcome.detail}", False,
                                  dead_lettered=len(unit))


def new_owner() -> str:
    return uuid.uuid4().hex
