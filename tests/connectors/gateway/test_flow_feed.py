"""The shared read (connectors/gateway/feed.py): one read and decode of each partition per gateway
for every subscription at the head, and a hung receiver that holds back only its own cursor."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from connectors.gateway import Gateway, feed
from connectors.kafka import ensure_topic
from connectors.lake import Lake
from connectors.metastore import Metastore
from tests.support.gateway import (
    Receiver,
    clicks_flow_spec,
    decode_from_kafka,
    flow_env,
    land_all,
    produce_clicks,
    produce_history,
    test_settings,
    wait_for,
)


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def make() -> Receiver:
        r = Receiver().start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def subscribe(flow, org, receiver, **config):
    created = flow.subscribe(org, receiver.url, config={"startfrom": "earliest", **config})
    flow.approve(created["id"])
    return created["id"]


def in_order_per_partition(requests) -> bool:
    seqs: dict[str, list[int]] = {}
    for r in requests:
        seqs.setdefault(r.headers["ce-flowpartition"], []).append(int(r.headers["ce-sequence"]))
    return all(s == sorted(s) for s in seqs.values())


def attached(gateway: Gateway, n: int) -> bool:
    return len(gateway.workers) == n and all(w.queue is not None for w in gateway.workers.values())


def test_one_read_per_partition_for_every_subscription_at_the_head(flow, receivers, kafka_bootstrap, topic2):
    subs = {}
    for org in ("p-001", "p-001", "p-002", "p-002"):
        r = receivers()
        subs[subscribe(flow, org, r)] = (org, r)
    g = Gateway(flow.store, [flow.spec], flow.bootstrap, flow.settings).start()
    try:
        wait_for(lambda: attached(g, 8), what="4 subscriptions × 2 partitions attached to the feeds")
        produce_clicks(kafka_bootstrap, topic2, 200)
        for org, r in subs.values():
            wait_for(lambda r=r: len(r.deliveries()) >= 100, what=f"{org}'s 100 events")
        workers = list(g.workers.values())
        feeds = list(g.feeds.feeds.values())
        assert len(feeds) == 2 and all(f.reads >= 1 for f in feeds)
        assert sum(w.catchup_reads for w in workers) == 0  # nobody read on its own: one decode per read
        for org, r in subs.values():
            got = r.deliveries()
            assert len(got) == 100 and {json.loads(x.body)["partner_id"] for x in got} == {org}
            assert len({x.headers["ce-id"] for x in got}) == 100 and in_order_per_partition(got)
    finally:
        g.stop()


def test_a_hung_receiver_holds_back_only_its_own_cursor(flow, receivers, kafka_bootstrap, topic2, monkeypatch):
    monkeypatch.setattr(feed, "QUEUE_BATCHES", 2)  # so that a few batches detach the hung cursor
    release = threading.Event()
    hung, fast = receivers(), receivers()

    def hang(_r):
        release.wait(30)
        return 200, {}

    hung.respond = hang
    subscribe(flow, "p-001", hung)
    subscribe(flow, "p-002", fast)
    g = Gateway(flow.store, [flow.spec], flow.bootstrap, test_settings(request_timeout_s=1.0)).start()
    try:
        wait_for(lambda: attached(g, 4), what="both subscriptions attached to the feeds")
        for chunk in range(10):  # several reads of the feed, more than the hung cursor's queue holds
            produce_clicks(kafka_bootstrap, topic2, 20, start=chunk * 20)
            wait_for(lambda n=(chunk + 1) * 10: len(fast.deliveries()) >= n, what="the fast receiver keeping up")
        assert len(fast.deliveries()) == 100
        assert len({r.headers["ce-id"] for r in hung.deliveries()}) <= 2  # its first event per partition, retried
        hung_workers = [w for w in g.workers.values() if w.sub.org == "p-001"]
        fast_workers = [w for w in g.workers.values() if w.sub.org == "p-002"]
        # fell behind: detached (its queue closed), while the feed went on for the fast one
        assert any(w.queue is not None and w.queue.closed for w in hung_workers)
        assert all(w.queue is not None and not w.queue.closed for w in fast_workers)
        release.set()
        wait_for(lambda: len({r.headers["ce-id"] for r in hung.deliveries()}) == 100, what="the hung one catching up")
        assert in_order_per_partition(hung.deliveries())
        assert {json.loads(x.body)["partner_id"] for x in hung.deliveries()} == {"p-001"}
        wait_for(lambda: all(w.queue is not None for w in hung_workers), what="the caught-up cursors attached again")
    finally:
        release.set()
        g.stop()


def test_a_position_below_the_low_watermark_is_delivered_from_the_lake_then_kafka(tmp_path, broker, receivers):
    """The broker lost offsets 0..49 of both partitions after they were landed: a subscription
    from `earliest` (0: the lake reaches back that far) gets them from the lake's live files, then Kafka from 50, with the ids and
    sequences a read from Kafka gave, in order, without a gap or a double."""
    topic = f"test.feedlake.{uuid.uuid4().hex[:8]}"
    ensure_topic(broker.bootstrap, topic, 2)
    spec = clicks_flow_spec(topic)
    produce_history(broker.bootstrap, topic, 240)  # 120 per partition, p-000..p-004, some quarantined
    want = {p: [o for o, partner in zip(*[decode_from_kafka(broker.bootstrap, spec, p).column(c).to_pylist()
                                          for c in ("_offset", "partner_id")], strict=True) if partner == "p-001"]
            for p in (0, 1)}
    lake = Lake(str(tmp_path / "lake"))
    ms = Metastore(f"sqlite:///{tmp_path / 'metastore.db'}")
    land_all(spec, lake, ms, broker.bootstrap, runs_of=80)
    ms.dispose()
    assert broker.truncate(topic, {0: 50, 1: 50}) == {0: 50, 1: 50}
    with flow_env(tmp_path, broker.bootstrap, topic) as flow:  # the same metastore
        r = receivers()
        sub_id = subscribe(flow, "p-001", r)
        assert flow.store.positions(sub_id) == {0: (0, None), 1: (0, None)}  # the lake reaches back to 0
        g = Gateway(flow.store, [flow.spec], broker.bootstrap, flow.settings, lake=lake).start()
        try:
            wait_for(lambda: {p: o for p, (o, _) in flow.store.positions(sub_id).items()} == {0: 120, 1: 120},
                     what="both partitions delivered through the end")
        finally:
            g.stop()
        got: dict[int, list[int]] = {0: [], 1: []}
        for x in r.deliveries():
            got[int(x.headers["ce-flowpartition"])].append(int(x.headers["ce-sequence"]))
            assert x.headers["ce-id"] == f"clicks-{x.headers['ce-flowpartition']}-{int(x.headers['ce-sequence'])}"
            assert json.loads(x.body)["partner_id"] == "p-001"
        assert got == want  # 0..49 from the lake, then Kafka: no gap, no double, in order
        assert any(o < 50 for o in got[0]) and any(o < 50 for o in got[1])


def test_a_cursor_takes_queued_batches_only_in_order_and_without_waiting():
    # A cursor behind its receiver sends the batches already queued together (worker._more_queued):
    # poll hands out only the batch that starts where the cursor is, never one past a gap.
    q = feed.CursorQueue(limit=4)
    first, second, far = (feed.EventBatch(0, a, b, []) for a, b in ((0, 10), (10, 25), (40, 50)))
    assert q.offer(first) and q.offer(second) and q.offer(far)
    assert q.take(0.1) is first
    assert q.poll(0) is None  # the cursor is at 10, not 0: nothing taken
    assert q.poll(10) is second
    assert q.poll(25) is None and list(q.items) == [far]  # 25..39 missing: left for take() to see
    assert q.poll(40) is far and q.poll(50) is None


def test_a_batch_with_nothing_for_a_cursor_does_not_wake_it_but_its_position_still_moves():
    mine = lambda b: [e for e in b.events if e == "mine"]  # noqa: E731 - the cursor's selector
    q = feed.CursorQueue(limit=2, wants=mine)
    for start, events in ((0, ["other"]), (10, ["other"]), (20, ["mine"]), (30, ["other"])):
        assert q.offer(feed.EventBatch(0, start, start + 10, events))
    passed, wanted = q.take(0.01), q.take(0.01)
    assert (passed.start, passed.end, passed.events) == (0, 20, [])  # one range, nothing in it
    assert (wanted.start, wanted.events) == (20, ["mine"])
    late = q.take(0.01)  # nothing queued: the range passed over comes after the wait, so the cursor commits it
    assert (late.start, late.end, late.events) == (30, 40, [])
    assert q.take(0.01) is None
    for start in range(40, 100, 10):  # passed-over batches take no slot: never detached for them
        assert q.offer(feed.EventBatch(0, start, start + 10, ["other"]))
    assert not q.closed


def test_the_bookkeeper_moves_an_idle_cursor_past_a_passed_range_without_waking_it():
    # DeliveryBooks.cycle calls move_idle: a cursor waiting in take() is moved by take_passed,
    # one that holds a batch (not idle) or stands elsewhere is left to move itself.
    q = feed.CursorQueue(limit=4, wants=lambda b: [e for e in b.events if e == "mine"])
    assert q.offer(feed.EventBatch(0, 0, 10, ["other"]))
    moved: list[int] = []
    assert not q.take_passed(0, moved.append)  # nobody waits in take(): the cursor may be mid-batch
    got: list = []
    taker = threading.Thread(target=lambda: got.append(q.take(30)))
    taker.start()
    wait_for(lambda: q.idle, 10, what="the cursor waiting in take()")
    assert not q.take_passed(5, moved.append) and moved == []  # not where the cursor stands
    assert q.take_passed(0, moved.append) and moved == [10] and q.passed is None
    assert q.idle and taker.is_alive()  # not woken for it
    assert q.offer(feed.EventBatch(0, 10, 20, ["other", "mine"]))  # its own event wakes it, at 10
    taker.join(10)
    assert [(b.start, b.end) for b in got] == [(10, 20)]
