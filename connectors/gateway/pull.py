"""Pull delivery: a subscriber that cannot host an endpoint receives, and settles, its events.

Modelled on Azure Event Grid namespaces' queue subscriptions (their REST reference:
`:receive`, `:acknowledge`, `:release`, `:reject`, `:renewLock`). A subscription with
`config.delivery: pull` has no sink; `receive` hands out up to `maxEvents` CloudEvents — the
same ids, sequences, attributes and data push would send — each under a lock token that expires
after `config.lockduration` seconds (default 60, at most 300). Before it expires the subscriber
acknowledges (done), releases (delivered again, optionally after a delay), rejects (to the dead
letter `<topic>.flow.<id>.dlq`, as push's dead letter) or renews it. An event whose lock expired
is delivered again with `deliveryCount` one higher, under a new token; the old token is dead —
until it has been delivered `config.maxdeliverycount` times (default 10, Event Grid's): then it
goes to the dead letter instead, as a reject would send it.

Below the broker's low watermark (retention, a truncated topic) a partition is served from the
lake's live files (history.py: same ids, sequences and attributes; `data` the landed record as
JSON), then from Kafka at the low watermark, without a gap or a double; when the lake does not
hold the whole window, a 409 says what the broker and the lake hold.

State, in the metastore (store.py): per (subscription, partition) a row in `fs_flow_pull` —
`read_through`, the first offset not yet handed out or skipped (filtered out, or invalid: what
the lake quarantines is never delivered), and a `version` every change of the partition bumps —
and one row per event handed out and not yet settled in `fs_flow_locks`. The position in
`fs_flow_positions` is the lowest offset still locked, else `read_through`: it moves past the
contiguous settled prefix of each partition, and a replay (or a `startfrom` change) that moves it
is noticed — its value or its `updated_at` is not what pull last wrote — and starts the
partition again from there, every outstanding lock token dead.

Two pullers never hold the same unexpired lock: a receive reads the partition's state and the
records outside any transaction, then commits only if the partition's `version` is still what it
read (compare-and-set; a loser reads again); settling takes the same row first (an UPDATE, so a
row lock on PostgreSQL, the write lock on SQLite) and changes a lock only while its token is
still the one given and unexpired. Order per partition, when `ordered` is true (the default): a
partition with an unexpired lock is handed to nobody — not even the holder — until every lock of
it is settled or expired, and expired events go out again before any newer one; so events of a
partition are processed one batch at a time, in offset order. With `ordered: false` a partition's
events go to whoever asks, redeliveries first.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from connectors.errors import TransientError
from connectors.formats import Batch, decoder_for
from connectors.gateway.events import FlowEvent, events_from_batch, schema_url, structured_request
from connectors.gateway.history import (
    HistoryError,
    events_from_history,
    lake_span,
    read_history,
)
from connectors.gateway.policy import event_filter
from connectors.gateway.service import FlowError, FlowService
from connectors.gateway.store import Subscription, locks, positions, pull_state, subscriptions
from connectors.kafka import consumer_config, ensure_topic, topic_partitions
from connectors.metastore import reading

MAX_EVENTS = 1000  # per receive (Event Grid: 100)
MAX_WAIT_S = 60  # long poll at most (Event Grid: 120)
MAX_TOKENS = 1000  # lock tokens per settle request
RELEASE_DELAYS = (0, 10, 60, 600, 3600)  # releaseDelayInSeconds Event Grid accepts
READ_S = 0.5  # longest one Kafka read of a partition waits for records
ATTEMPTS = 4  # a receive that loses the compare-and-set this often gives the partition up for now
ACTIONS = ("acknowledge", "release", "reject", "renewLock")


def _token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(18)).decode()


@dataclass(frozen=True)
class Received:
    """One event handed out: what a receive answers for it."""

    token: str
    delivery_count: int
    event: FlowEvent

    def json_bytes(self) -> bytes:
        """`{"brokerProperties": {...}, "event": <the CloudEvent as push's structured mode sends it>}`."""
        head = json.dumps({"lockToken": self.token, "deliveryCount": self.delivery_count}, separators=(",", ":"))
        return b'{"brokerProperties":' + head.encode() + b',"event":' + structured_request(self.event)[1] + b"}"


def answer_bytes(items: list[Received]) -> bytes:
    return b'{"value":[' + b",".join(i.json_bytes() for i in items) + b"]}"


class _Conflict(TransientError):
    """Another receive or settle changed the partition first: read it again."""


class PullService:
    def __init__(self, flow: FlowService):
        self.flow = flow
        self.store = flow.store
        self.engine = flow.store.engine
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._lock = threading.Lock()
        self._producer: Producer | None = None
        self._dlq_ready: set[str] = set()
        self._turn = 0

    # --- who may ---------------------------------------------------------------------------

    def subscription(self, org: str, sub_id: str, receiving: bool) -> Subscription:
        sub = self.flow.get(org, sub_id)  # 404 for what the caller may not see
        if sub.options.delivery != "pull":
            raise FlowError(409, f"subscription {sub_id!r} is push delivery (config.delivery: push): "
                                 "the gateway sends its events to the sink; there is nothing to receive")
        if sub.org != org:
            raise FlowError(403, "only the subscriber receives and settles its events")
        if receiving and sub.state != "active":
            why = " (the owner has not approved it yet)" if sub.state == "pending_approval" else ""
            raise FlowError(409, f"subscription is {sub.state}{why}: nothing is handed out")
        if sub.state in ("retired", "failed", "rejected", "deleted"):
            raise FlowError(409, f"subscription is {sub.state}")
        return sub

    # --- receive -----------------------------------------------------------------------------

    def receive(self, org: str, sub_id: str, max_events: int) -> list[Received]:
        """Up to `max_events` events of the subscription, each locked to this call's caller."""
        sub = self.subscription(org, sub_id, receiving=True)
        spec = self.flow.specs[sub.product]
        parts = self._topic_partitions(spec.topic)
        with self._lock:
            self._turn += 1
            turn = self._turn
        out: list[Received] = []
        for i in range(len(parts)):  # a different partition first each call: none starves
            if len(out) >= max_events:
                break
            p = parts[(turn + i) % len(parts)]
            for _ in range(ATTEMPTS):
                try:
                    out += self._receive_partition(sub, spec, p, max_events - len(out))
                    break
                except _Conflict:
                    continue
        return out

    def _topic_partitions(self, topic: str) -> list[int]:
        at, parts = self._partitions.get(topic, (0.0, []))
        if time.monotonic() - at > 30 or not parts:
            parts = topic_partitions(self.flow.bootstrap, topic, self.flow.kafka_config)
            if not parts:
                raise FlowError(503, f"the topic {topic!r} is not available on the broker right now")
            self._partitions[topic] = (time.monotonic(), parts)
        return parts

    def _sync(self, sub_id: str, p: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(fs_flow_positions row, fs_flow_pull row) of the partition, the pull row made or reset
        to the position when there is none or a replay moved the position."""
        for _ in range(ATTEMPTS):
            pos, st = self._read_both(sub_id, p)
            if pos is not None and st is not None and st["position"] == pos["next_offset"] \
                    and st["position_at"] == pos["updated_at"]:
                return dict(pos), dict(st)
            try:
                with self.engine.begin() as conn:
                    if pos is None:  # a partition added after the subscription was made
                        pos = {"subscription": sub_id, "partition": p, "next_offset": 0, "not_before_ms": None,
                               "updated_at": time.time()}
                        conn.execute(insert(positions).values(**pos))
                    values = {"read_through": pos["next_offset"], "position": pos["next_offset"],
                              "position_at": pos["updated_at"]}
                    if st is None:
                        conn.execute(insert(pull_state).values(subscription=sub_id, partition=p, version=0, **values))
                    else:
                        done = conn.execute(update(pull_state).where(and_(
                            pull_state.c.subscription == sub_id, pull_state.c.partition == p,
                            pull_state.c.version == st["version"])).values(version=pull_state.c.version + 1, **values)).rowcount
                        if done != 1:
                            continue
                        # a replay: every outstanding lock of the partition is void
                        conn.execute(delete(locks).where(and_(locks.c.subscription == sub_id, locks.c.partition == p)))
            except IntegrityError:
                continue  # another call made the row first
        raise _Conflict()

    def _read_both(self, sub_id: str, p: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The partition's position and pull row read in ONE statement, so one snapshot: read
        apart, a settle committing between the two reads (it moves both) looked like a replay
        and voided every lock of the partition (seen on PostgreSQL with two pullers)."""
        pc = [c.label(f"pos_{c.name}") for c in positions.c]
        sc = [c.label(f"st_{c.name}") for c in pull_state.c]
        query = select(*pc, *sc).select_from(positions.outerjoin(pull_state, and_(
            pull_state.c.subscription == positions.c.subscription, pull_state.c.partition == positions.c.partition,
        ))).where(and_(positions.c.subscription == sub_id, positions.c.partition == p))
        with reading(self.engine) as conn:
            row = conn.execute(query).mappings().first()
            if row is None:  # no position yet; a pull row alone cannot be trusted
                st = conn.execute(select(pull_state).where(
                    and_(pull_state.c.subscription == sub_id, pull_state.c.partition == p))).mappings().first()
                return None, (dict(st) if st else None)
        pos = {c.name: row[f"pos_{c.name}"] for c in positions.c}
        st = {c.name: row[f"st_{c.name}"] for c in pull_state.c}
        return pos, (st if st["subscription"] is not None else None)

    def _receive_partition(self, sub: Subscription, spec, p: int, want: int) -> list[Received]:
        pos, st = self._sync(sub.id, p)
        with reading(self.engine) as conn:
            rows = conn.execute(select(locks).where(and_(locks.c.subscription == sub.id, locks.c.partition == p))
                                .order_by(locks.c.event_offset)).mappings().all()
        now = time.time()
        held = [r for r in rows if r["expires_at"] > now]
        if sub.options.ordered and held:
            return []  # ordered: the partition is someone's until its locks are settled or expire
        expired = [r for r in rows if r["expires_at"] <= now]
        # delivered maxdeliverycount times without acknowledge: to the dead letter, never again
        spent = [r for r in expired if r["delivery_count"] >= sub.options.max_deliveries]
        if spent:
            self._dead_letter(sub, spent, f"delivered {sub.options.max_deliveries} times without acknowledge "
                                          "(config.maxdeliverycount)")
            expired = [r for r in expired if r["delivery_count"] < sub.options.max_deliveries]
        again = expired[:want]
        fresh: list[FlowEvent] = []
        frontier, not_before, cleared = st["read_through"], pos["not_before_ms"], False
        if len(again) < want and len(again) == len(expired):
            fresh, frontier, cleared = self._read(sub, spec, p, st["read_through"], want - len(again), not_before)
        if not again and not spent and frontier == st["read_through"]:
            return []
        lock_s = sub.options.lock_s
        out: list[Received] = []
        with self.engine.begin() as conn:
            if conn.execute(update(pull_state).where(and_(
                    pull_state.c.subscription == sub.id, pull_state.c.partition == p,
                    pull_state.c.version == st["version"])).values(
                    version=pull_state.c.version + 1, read_through=frontier)).rowcount != 1:
                raise _Conflict()
            if again:
                new_rows = [{"k_offset": r["event_offset"], "k_token": _token(), "k_count": r["delivery_count"] + 1}
                            for r in again]
                conn.execute(update(locks).where(and_(
                    locks.c.subscription == sub.id, locks.c.partition == p, locks.c.event_offset == bindparam("k_offset"),
                )).values(lock_token=bindparam("k_token"), expires_at=now + lock_s, delivery_count=bindparam("k_count")),
                    new_rows)
                for r, n in zip(again, new_rows, strict=True):
                    ev = FlowEvent(p, r["event_offset"], json.loads(r["attributes"]), bytes(r["data"]), None)
                    out.append(Received(n["k_token"], n["k_count"], ev))
            if spent:  # only while each still has the token read: the version's compare-and-set says so
                conn.execute(delete(locks).where(and_(
                    locks.c.subscription == sub.id, locks.c.partition == p,
                    locks.c.lock_token.in_([r["lock_token"] for r in spent]))))
                conn.execute(update(subscriptions).where(subscriptions.c.id == sub.id).values(
                    dead_lettered=subscriptions.c.dead_lettered + len(spent), last_attempt_at=now,
                    last_outcome=f"pull: {len(spent)} dead-lettered after {sub.options.max_deliveries} deliveries"))
            if fresh:
                values = [{"subscription": sub.id, "partition": p, "event_offset": ev.offset, "lock_token": _token(),
                           "expires_at": now + lock_s, "delivery_count": 1, "attributes": json.dumps(ev.attributes),
                           "data": ev.data} for ev in fresh]
                conn.execute(insert(locks), values)
                out += [Received(v["lock_token"], 1, ev) for v, ev in zip(values, fresh, strict=True)]
            gone = {r["event_offset"] for r in spent}
            lowest = [r["event_offset"] for r in rows if r["event_offset"] not in gone] + [ev.offset for ev in fresh]
            self._move_position(conn, sub.id, p, pos, min(lowest) if lowest else frontier, cleared)
        return out

    def _move_position(self, conn, sub_id: str, p: int, pos: dict[str, Any], to: int, clear_not_before: bool) -> None:
        """fs_flow_positions to `to` (compare-and-set on what was read: a replay since wins)."""
        if to == pos["next_offset"] and not clear_not_before:
            return
        at = time.time()
        values: dict[str, Any] = {"next_offset": to, "updated_at": at}
        if clear_not_before:
            values["not_before_ms"] = None
        if conn.execute(update(positions).where(and_(
                positions.c.subscription == sub_id, positions.c.partition == p,
                positions.c.next_offset == pos["next_offset"], positions.c.updated_at == pos["updated_at"],
        )).values(**values)).rowcount != 1:
            raise _Conflict()
        conn.execute(update(pull_state).where(and_(pull_state.c.subscription == sub_id, pull_state.c.partition == p))
                     .values(position=to, position_at=at))

    def _read(self, sub: Subscription, spec, p: int, start: int, want: int,
              not_before: int | None) -> tuple[list[FlowEvent], int, bool]:
        """Up to `want` deliverable events of partition `p` from `start`: (events, the first offset
        not looked at, whether the startfrom time was passed). Skipped records move the frontier.
        Below the broker's low watermark the events come from the lake, then from Kafka."""
        keep = event_filter(spec, sub.org, sub.body)
        since = _StartTime(not_before)
        try:
            events, frontier = self._read_kafka(spec, p, start, want, since, keep)
            return events, frontier, since.passed
        except _BelowBroker as below:
            low = below.low if below.low is not None else self._low_watermark(spec.topic, p)
        events, frontier = self._read_lake(spec, p, start, low, want, since, keep)
        if len(events) < want and frontier == low:
            try:
                more, frontier = self._read_kafka(spec, p, low, want - len(events), since, keep)
            except _BelowBroker:  # the broker dropped more meanwhile: the next receive goes on from the lake
                return events, frontier, since.passed
            events += more
        return events, frontier, since.passed

    def _low_watermark(self, topic: str, p: int) -> int:
        consumer = self._consumer(topic)
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[0]
        finally:
            consumer.close()

    def _read_lake(self, spec, p: int, start: int, low: int, want: int, since: _StartTime,
                   keep) -> tuple[list[FlowEvent], int]:
        """Events of [start, low) from the lake's live files (history.py): (events, frontier).
        A 409 when the lake does not hold the whole window."""
        lake = getattr(self.flow, "lake", None)
        if lake is None:
            raise _gone(p, start, low, "the gateway has no lake configured to serve history from")
        span = lake_span(self.store.metastore, spec.name, p)
        if span is None or span.first > start or span.end < low:
            holds = "none of it" if span is None else f"{span.first}..{span.end - 1}"
            raise _gone(p, start, low, f"the lake holds {holds}, which does not reach from {start} to {low}")
        events: list[FlowEvent] = []
        try:
            for table in read_history(lake, self.store.metastore, spec, p, start, low, max_rows=min(max(want * 2, 500), 10_000)):
                for ev in since.deliverable(events_from_history(spec, p, table, schema_url(self.flow.settings.public_url, spec)), keep):
                    events.append(ev)
                    if len(events) == want:
                        return events, ev.offset + 1
        except HistoryError as e:
            raise FlowError(503, f"reading partition {p}'s history from the lake failed: {e}") from e
        return events, low

    def _read_kafka(self, spec, p: int, start: int, want: int, since: _StartTime,
                    keep) -> tuple[list[FlowEvent], int]:
        decoder = decoder_for(spec)
        consumer = self._consumer(spec.topic)
        events: list[FlowEvent] = []
        frontier = start
        try:
            consumer.assign([TopicPartition(spec.topic, p, start)])
            deadline = time.monotonic() + READ_S
            while len(events) < want and time.monotonic() < deadline:
                msgs = consumer.consume(num_messages=min(max(want * 2, 100), 2000), timeout=0.1)
                eof = False
                records = []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            eof = True
                            continue
                        if err.code() in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET):
                            if frontier == start:
                                raise _BelowBroker(None)
                            raise FlowError(503, f"reading {spec.topic}[{p}] failed: {err}")
                        raise FlowError(503, f"reading {spec.topic}[{p}] failed: {err}")
                    if m.offset() >= frontier:
                        records.append(m)
                if records and frontier == start and records[0].offset() > start:
                    low, _ = consumer.get_watermark_offsets(TopicPartition(spec.topic, p), timeout=10, cached=False)
                    if low > start:  # the broker lost the head of the log: the lake, or a 409 — never a silent skip
                        raise _BelowBroker(low)
                if records:
                    decoded = decoder.decode(Batch(
                        p, [m.value() for m in records], [m.key() for m in records],
                        [m.offset() for m in records], [m.timestamp()[1] for m in records],
                        [m.headers() for m in records] if decoder.needs_headers else None))  # binary-mode CloudEvents
                    by_offset = {m.offset(): m for m in records}
                    stop = records[-1].offset() + 1
                    dataschema = schema_url(self.flow.settings.public_url, spec)
                    for ev in since.deliverable(events_from_batch(spec, p, by_offset, decoded.valid, dataschema), keep):
                        events.append(ev)
                        if len(events) == want:
                            stop = ev.offset + 1
                            break
                    frontier = stop
                if eof:
                    break
        finally:
            consumer.close()
        return events, frontier

    def _consumer(self, topic: str) -> Consumer:
        # one per read, closed after it: a pooled one would outlive the app (nothing closes it)
        conf = consumer_config(self.flow.bootstrap, "flowsuite.flow.pull", {
            **self.flow.kafka_config, "enable.partition.eof": True, "fetch.wait.max.ms": 20})
        return Consumer(conf)

    # --- settle ------------------------------------------------------------------------------

    def settle(self, org: str, sub_id: str, action: str, tokens: list[str], delay_s: int = 0) -> dict[str, Any]:
        """acknowledge | release | reject | renewLock the events of `tokens`:
        {"succeededLockTokens": [...], "failedLockTokens": [{"lockToken", "error": {code, message}}]}."""
        assert action in ACTIONS
        sub = self.subscription(org, sub_id, receiving=False)
        now = time.time()
        with reading(self.engine) as conn:
            rows = conn.execute(select(locks).where(and_(
                locks.c.subscription == sub_id, locks.c.lock_token.in_(tokens)))).mappings().all()
        found = {r["lock_token"]: dict(r) for r in rows}
        failed: list[dict[str, Any]] = []
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for t in tokens:
            r = found.get(t)
            if r is None:
                failed.append(_failure(t, "LockTokenNotFound", "no event of this subscription is locked under this token: "
                                       "it was settled already, or its lock expired and the event was received again "
                                       "under a new token, or a replay moved the position"))
            elif r["expires_at"] <= now:
                failed.append(_failure(t, "LockExpired", f"the lock expired {now - r['expires_at']:.1f} s ago; the event "
                                       "will be received again, with a new token"))
            else:
                by_partition.setdefault(r["partition"], []).append(r)
        if action == "reject":
            self._dead_letter(sub, [r for rs in by_partition.values() for r in rs], "rejected by the subscriber (pull :reject)")
        spec = self.flow.specs[sub.product]
        succeeded: list[str] = []
        for p, rs in sorted(by_partition.items()):
            for _ in range(ATTEMPTS):
                try:
                    succeeded += self._settle_partition(sub, spec, p, action, rs, delay_s, failed)
                    break
                except _Conflict:
                    continue
            else:
                failed += [_failure(r["lock_token"], "Conflict", "the partition kept changing; try again") for r in rs]
        return {"succeededLockTokens": succeeded, "failedLockTokens": failed}

    def _settle_partition(self, sub: Subscription, spec, p: int, action: str, rs: list[dict[str, Any]],
                          delay_s: int, failed: list[dict[str, Any]]) -> list[str]:
        now = time.time()
        with self.engine.begin() as conn:
            # the partition's row first: every change of its locks is serialised behind it
            conn.execute(update(pull_state).where(and_(pull_state.c.subscription == sub.id, pull_state.c.partition == p))
                         .values(version=pull_state.c.version + 1))
            wanted = [r["lock_token"] for r in rs]
            live = conn.execute(select(locks.c.event_offset, locks.c.lock_token).where(and_(
                locks.c.subscription == sub.id, locks.c.partition == p, locks.c.lock_token.in_(wanted),
                locks.c.expires_at > now))).all()
            offsets = [o for o, _ in live]
            held = {t for _, t in live}
            done = [t for t in wanted if t in held]  # in the order asked
            lost = [t for t in wanted if t not in held]
            these = and_(locks.c.subscription == sub.id, locks.c.partition == p, locks.c.event_offset.in_(offsets))
            if not offsets:
                pass
            elif action in ("acknowledge", "reject"):
                conn.execute(delete(locks).where(these))
            elif action == "release":
                conn.execute(update(locks).where(and_(
                    locks.c.subscription == sub.id, locks.c.partition == p, locks.c.event_offset == bindparam("k_offset"),
                )).values(lock_token=bindparam("k_token"), expires_at=now + delay_s),
                    [{"k_offset": o, "k_token": _token()} for o in offsets])
            else:
                conn.execute(update(locks).where(these).values(expires_at=now + sub.options.lock_s))
            if action in ("acknowledge", "reject") and done:
                pos = conn.execute(select(positions).where(
                    and_(positions.c.subscription == sub.id, positions.c.partition == p))).mappings().first()
                st = conn.execute(select(pull_state).where(
                    and_(pull_state.c.subscription == sub.id, pull_state.c.partition == p))).mappings().first()
                if pos is None or st is None or st["position"] != pos["next_offset"] or st["position_at"] != pos["updated_at"]:
                    raise _Conflict()  # a replay: the next read resets the partition and voids the tokens
                lowest = conn.execute(select(locks.c.event_offset).where(and_(
                    locks.c.subscription == sub.id, locks.c.partition == p)).order_by(locks.c.event_offset).limit(1)).scalar()
                self._move_position(conn, sub.id, p, dict(pos), lowest if lowest is not None else st["read_through"], False)
                counts = {"delivered": subscriptions.c.delivered + len(done)} if action == "acknowledge" else \
                    {"dead_lettered": subscriptions.c.dead_lettered + len(done)}
                conn.execute(update(subscriptions).where(subscriptions.c.id == sub.id).values(
                    last_attempt_at=now, last_outcome=f"pull: {len(done)} {action}d"[:500],
                    **({"last_success_at": now} if action == "acknowledge" else {}), **counts))
        failed += [_failure(t, "LockLost", "the lock expired or changed while this request ran") for t in lost]
        return done

    def _dead_letter(self, sub: Subscription, rows: list[dict[str, Any]], outcome: str) -> None:
        """The rejected events to `<topic>.flow.<id>.dlq`, as push's dead letter writes them —
        before their locks go, so a failure here loses nothing (the locks stay, and expire)."""
        if not rows:
            return
        from connectors.gateway.worker import dlq_topic_of

        spec = self.flow.specs[sub.product]
        topic = dlq_topic_of(spec, sub.id)
        if topic not in self._dlq_ready:
            ensure_topic(self.flow.bootstrap, topic, 1, kafka_config=self.flow.kafka_config)
            self._dlq_ready.add(topic)
        with self._lock:
            if self._producer is None:
                self._producer = Producer({**self.flow.kafka_config, "bootstrap.servers": self.flow.bootstrap,
                                           "enable.idempotence": True, "acks": "all"})
        errors: list[str] = []
        for r in rows:
            attrs = json.loads(r["attributes"])
            self._producer.produce(
                topic, value=bytes(r["data"]), key=(attrs.get("partitionkey") or "").encode() or None,
                headers=[
                    ("flowsuite.flow.subscription", sub.id.encode()),
                    ("flowsuite.flow.attempts", str(r["delivery_count"]).encode()),
                    ("flowsuite.flow.outcome", outcome.encode()),
                    *[(f"ce_{k}", str(v).encode()) for k, v in attrs.items()],
                ],
                on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
            )
        if self._producer.flush(30) or errors:
            raise FlowError(503, f"the dead letter {topic} did not acknowledge the rejected events: {errors[:1]}; "
                                 "nothing was rejected, try again")


class _StartTime:
    """`startfrom` by time across the reads of one receive (the lake's, then Kafka's): events are
    skipped until the first whose event time is at/after `not_before`; from then on every one
    counts (`passed`: the position's not_before can be cleared)."""

    def __init__(self, not_before: int | None):
        self.not_before, self.passed = not_before, False

    def deliverable(self, events: Iterable[FlowEvent], keep: Callable[[FlowEvent], bool]) -> Iterator[FlowEvent]:
        """The events past the start time that the subscription's filters and policy keep."""
        for ev in events:
            if self.not_before is not None:
                if ev.time_ms is None or ev.time_ms < self.not_before:
                    continue
                self.not_before, self.passed = None, True
            if keep(ev):
                yield ev


class _BelowBroker(Exception):
    """The read's start is below the partition's low watermark (None: not known yet)."""

    def __init__(self, low: int | None):
        super().__init__(low)
        self.low = low


def _gone(p: int, offset: int, low: int | None, why: str) -> FlowError:
    holds = f" (it starts at {low} now)" if low is not None else ""
    return FlowError(409, f"partition {p}: offset {offset} is no longer on the broker{holds}, and {why}; "
                          "replay to an offset the broker or the lake holds (POST /subscriptions/{id}/replay)")


def _failure(token: str, code: str, message: str) -> dict[str, Any]:
    return {"lockToken": token, "error": {"code": code, "message": message}}


def parse_tokens(body: Any) -> list[str]:
    """`{"lockTokens": [...]}` checked: 1-1000 non-empty strings; a 400 names the bad one."""
    if not isinstance(body, dict) or set(body) != {"lockTokens"}:
        raise FlowError(400, 'the body is {"lockTokens": ["<token from :receive>", ...]}')
    tokens = body["lockTokens"]
    if not isinstance(tokens, list) or not 1 <= len(tokens) <= MAX_TOKENS:
        raise FlowError(400, f"lockTokens must be an array of 1 to {MAX_TOKENS} lock tokens")
    for i, t in enumerate(tokens):
        if not isinstance(t, str) or not t or len(t) > 64:
            raise FlowError(400, f"lockTokens[{i}]: {t!r} is not a lock token (a string from :receive)")
    if len(set(tokens)) != len(tokens):
        dup = next(t for t in tokens if tokens.count(t) > 1)
        raise FlowError(400, f"lockTokens: {dup!r} is given twice")
    return tokens
