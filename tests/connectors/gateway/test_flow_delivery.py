"""Delivery against a real broker and a real HTTP receiver on loopback: signed CloudEvents in
order per partition, only inside filters and policy, positions moved only after 2xx, and every
failure the webhook specs name (500 for a while, 429 + Retry-After, 410, 400, gone for good)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import timedelta

import pytest
from standardwebhooks import Webhook

from connectors.gateway import Gateway
from connectors.gateway.worker import dlq_topic_of
from tests.support import read_messages
from tests.support.gateway import (
    OWNER,
    T0,
    Receiver,
    flow_env,
    loopback_only,
    produce_clicks,
    test_settings,
    wait_for,
)


@pytest.fixture
def gateway(flow):
    gateways = []

    def start(**kw):
        g = Gateway(flow.store, [flow.spec], flow.bootstrap, test_settings(**kw) if kw else flow.settings).start()
        gateways.append(g)
        return g

    yield start
    for g in gateways:
        g.stop()


def by_partition(requests) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = defaultdict(list)
    for r in requests:
        seqs[r.headers["ce-flowpartition"]].append(int(r.headers["ce-sequence"]))
    return seqs


def active_subscription(flow, receiver, org="p-001", **config):
    created = flow.subscribe(org, receiver.url, config={"startfrom": "earliest", **config})
    flow.approve(created["id"])
    return created


def test_signed_binary_events_in_order_only_the_partners_own(flow, gateway, receiver, kafka_bootstrap, topic2):
    produce_clicks(kafka_bootstrap, topic2, 60)
    created = active_subscription(flow, receiver)
    gateway()
    wait_for(lambda: len(receiver.deliveries()) >= 30, what="30 deliveries")
    wait_for(lambda: sum(o for o, _ in flow.store.positions(created["id"]).values()) == 60, what="every record passed")
    got = receiver.deliveries()
    assert len(got) == 30  # p-002's 30 events never left
    hook = Webhook(created["webhooksecret"])
    for r in got:
        record = hook.verify(r.body, r.headers)  # Standard Webhooks, the reference library
        assert r.headers["ce-partnerid"] == "p-001" == record["partner_id"]
        assert r.headers["webhook-id"] == r.headers["ce-id"]
        assert r.headers["ce-id"].endswith(f"-{int(r.headers['ce-sequence'])}")
        assert r.headers["ce-source"] == "/flowsuite/products/clicks" and r.headers["ce-specversion"] == "1.0"
        assert r.headers["content-type"] == "application/json"
        assert r.headers["webhook-request-origin"] == flow.settings.origin
        assert r.headers["ce-subject"] == record["event_id"] == r.headers["ce-partitionkey"]
    for seqs in by_partition(got).values():
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # order per partition, no repeat
    positions = flow.store.positions(created["id"])
    assert sum(o for o, _ in positions.values()) == 60  # every record passed, p-002's skipped
    sub = flow.store.get(created["id"])
    assert sub.delivered == 30 and sub.failures == 0 and sub.last_outcome == "HTTP 200"


def test_structured_and_batched_modes(flow, gateway, kafka_bootstrap, topic2):
    structured, batched = Receiver().start(), Receiver().start()
    try:
        produce_clicks(kafka_bootstrap, topic2, 40)
        s = active_subscription(flow, structured, mode="structured")
        b = active_subscription(flow, batched, mode="batched", maxbatch=7)
        gateway()
        wait_for(lambda: len(structured.deliveries()) >= 20, what="structured")
        wait_for(lambda: sum(len(json.loads(r.body)) for r in batched.deliveries()) >= 20, what="batched")
        for r in structured.deliveries():
            assert r.headers["content-type"] == "application/cloudevents+json"
            event = Webhook(s["webhooksecret"]).verify(r.body, r.headers)
            assert event["specversion"] == "1.0" and event["partnerid"] == "p-001" and event["data"]["partner_id"] == "p-001"
        events = []
        for r in batched.deliveries():
            assert r.headers["content-type"] == "application/cloudevents-batch+json"
            batch = Webhook(b["webhooksecret"]).verify(r.body, r.headers)
            assert 1 <= len(batch) <= 7
            events += batch
        assert len(events) == 20 and {e["partnerid"] for e in events} == {"p-001"}
    finally:
        structured.stop()
        batched.stop()


def test_receiver_failing_for_a_while_loses_nothing_and_keeps_order(flow, gateway, receiver, kafka_bootstrap, topic2):
    answers = {"n": 0}

    def flaky(_r):
        answers["n"] += 1
        return (500, {}) if answers["n"] <= 6 else (200, {})

    receiver.respond = flaky
    produce_clicks(kafka_bootstrap, topic2, 40)
    created = active_subscription(flow, receiver)
    gateway()
    wait_for(lambda: len({r.headers["ce-id"] for r in receiver.deliveries()}) >= 20, what="all 20 after failures")
    wait_for(lambda: sum(o for o, _ in flow.store.positions(created["id"]).values()) == 40, what="every record passed")
    ok = [r for r in receiver.deliveries() if r.status == 200]
    assert len(ok) == 20 and len(receiver.deliveries()) == 26 and len({r.headers["ce-id"] for r in ok}) == 20
    for seqs in by_partition(ok).values():
        assert seqs == sorted(seqs)
    failed_ids = [r.headers["webhook-id"] for r in receiver.deliveries() if r.status == 500]
    assert set(failed_ids) <= {r.headers["webhook-id"] for r in ok}  # retried with the same id


def test_429_retry_after_is_honoured(flow, gateway, receiver, kafka_bootstrap, topic2):
    answers = {"n": 0}

    def limited(_r):
        answers["n"] += 1
        return (429, {"Retry-After": "2"}) if answers["n"] == 1 else (200, {})

    receiver.respond = limited
    produce_clicks(kafka_bootstrap, topic2, 4)
    active_subscription(flow, receiver)
    gateway()
    wait_for(lambda: len(receiver.deliveries()) >= 3, what="delivery after the 429")
    first, second = receiver.deliveries()[:2]
    assert second.at - first.at >= 1.9
    assert second.headers["webhook-id"] == first.headers["webhook-id"]


def test_410_retires_the_subscription(flow, gateway, receiver, kafka_bootstrap, topic2):
    receiver.respond = lambda _r: (410, {})
    produce_clicks(kafka_bootstrap, topic2, 20)
    created = active_subscription(flow, receiver)
    g = gateway()
    wait_for(lambda: flow.store.get(created["id"]).state == "retired", what="retired")
    wait_for(lambda: not any(w.is_alive() for w in list(g.workers.values())), what="every delivery stopped")
    assert len(receiver.deliveries()) <= 2  # at most one request per partition, then nothing
    assert "410" in flow.store.get(created["id"]).reason


def test_gone_for_good_dead_letters_then_pauses(flow, gateway, receiver, kafka_bootstrap, topic2):
    produce_clicks(kafka_bootstrap, topic2, 4, partition=0)
    created = active_subscription(flow, receiver, ttl="3s")
    receiver.stop()  # gone for good: connection refused from now on
    g = gateway()
    # while the receiver fails, its partition is paused in the consumer: nothing more is fetched
    wait_for(lambda: any(w.paused for w in list(g.workers.values())), what="the partition paused")
    wait_for(lambda: flow.store.get(created["id"]).state == "paused", what="paused after the dead letter")
    sub = flow.store.get(created["id"])
    assert "dead-letter" in sub.reason and sub.dead_lettered == 1
    [dead] = read_messages(kafka_bootstrap, dlq_topic_of(flow.spec, created["id"]), 1)  # acked before it moved on
    headers = dict(dead.headers())
    assert int(headers["flowsuite.flow.attempts"]) >= 2
    assert headers["flowsuite.flow.outcome"].startswith(b"no answer")
    assert headers["ce_partnerid"] == b"p-001" and json.loads(dead.value())["partner_id"] == "p-001"
    # the position moved past the dead-lettered event only
    assert flow.store.positions(created["id"])[0][0] == 1


def test_400_dead_letters_at_once_and_goes_on(flow, gateway, receiver, kafka_bootstrap, topic2):
    receiver.respond = lambda r: (400, {}) if r.headers["ce-subject"] == "e2" else (200, {})
    produce_clicks(kafka_bootstrap, topic2, 12, partition=0)
    created = active_subscription(flow, receiver)
    gateway()
    wait_for(lambda: flow.store.get(created["id"]).delivered == 5, what="the other five")
    assert [r.headers["ce-subject"] for r in receiver.deliveries()].count("e2") == 1  # not retried
    assert flow.store.get(created["id"]).state == "active"
    [dead] = read_messages(kafka_bootstrap, dlq_topic_of(flow.spec, created["id"]), 1)  # acked before it moved on
    assert dead.key() == b"e2"


def test_startfrom_offset_and_time(flow, gateway, kafka_bootstrap, topic2):
    produce_clicks(kafka_bootstrap, topic2, 40, partners=("p-001",), partition=0,
                   when=lambda i: T0 + timedelta(minutes=i))
    by_offset, by_time = Receiver().start(), Receiver().start()
    try:
        a = active_subscription(flow, by_offset, startfrom={"0": 25})
        cutoff = (T0 + timedelta(minutes=33)).isoformat()
        b = active_subscription(flow, by_time, startfrom=cutoff)
        gateway()
        wait_for(lambda: len(by_offset.deliveries()) >= 15 and len(by_time.deliveries()) >= 7, what="both")
        wait_for(lambda: all(flow.store.positions(s["id"])[0][0] == 40 for s in (a, b)), what="both passed offset 39")
        assert [int(r.headers["ce-sequence"]) for r in by_offset.deliveries()] == list(range(25, 40))
        assert [r.headers["ce-subject"] for r in by_time.deliveries()] == [f"e{i}" for i in range(33, 40)]
    finally:
        by_offset.stop()
        by_time.stop()


def test_latest_starts_after_what_is_there(flow, gateway, receiver, kafka_bootstrap, topic2):
    produce_clicks(kafka_bootstrap, topic2, 20)
    created = flow.subscribe("p-001", receiver.url)  # startfrom latest, the default
    flow.approve(created["id"])
    g = gateway()
    wait_for(lambda: len(g.workers) == 2, what="both partitions claimed")
    produce_clicks(kafka_bootstrap, topic2, 10, start=100)
    wait_for(lambda: len(receiver.deliveries()) >= 5, what="new events")
    wait_for(lambda: sum(o for o, _ in flow.store.positions(created["id"]).values()) == 30, what="every record passed")
    assert sorted(r.headers["ce-subject"] for r in receiver.deliveries()) == sorted(f"e{i}" for i in range(100, 110, 2))


def test_nothing_is_sent_while_paused_or_pending(flow, gateway, receiver, kafka_bootstrap, topic2):
    created = flow.subscribe("p-001", receiver.url, config={"startfrom": "earliest"})
    produce_clicks(kafka_bootstrap, topic2, 10)
    g = gateway()
    wait_for(lambda: g.looks >= 3, what="a few looks for work")  # each saw the subscription and claimed nothing
    assert receiver.deliveries() == [] and g.workers == {}  # pending approval
    flow.approve(created["id"])
    wait_for(lambda: len(receiver.deliveries()) == 5, what="first five")
    with flow.client(OWNER) as c:
        assert c.post(f"/subscriptions/{created['id']}/pause").status_code == 200
    wait_for(lambda: not any(w.is_alive() for w in list(g.workers.values())), what="the deliveries stopped")
    produce_clicks(kafka_bootstrap, topic2, 10, start=10)
    seen = g.looks
    wait_for(lambda: g.looks >= seen + 3, what="a few looks for work")
    assert not any(w.is_alive() for w in list(g.workers.values()))  # paused: nothing claimed again
    assert len(receiver.deliveries()) == 5
    with flow.client(OWNER) as c:
        assert c.post(f"/subscriptions/{created['id']}/resume").status_code == 200
    wait_for(lambda: len(receiver.deliveries()) == 10, what="the rest after resume")


def test_rate_limit_from_the_handshake(flow, gateway, receiver, kafka_bootstrap, topic2):
    receiver.rate = "600"  # 10 per second
    produce_clicks(kafka_bootstrap, topic2, 40, partners=("p-001",))
    active_subscription(flow, receiver)
    gateway()
    wait_for(lambda: len(receiver.deliveries()) >= 25, timeout=30, what="rate-limited deliveries")
    times = [r.at for r in receiver.deliveries()]
    assert times[24] - times[0] >= 1.8  # 25 requests at 10/s need ~2.4 s (the first ones from the bucket)


def test_a_redirect_is_never_followed(flow, gateway, receiver, kafka_bootstrap, topic2):
    receiver.respond = lambda _r: (307, {"Location": "http://10.0.0.1/steal"})
    produce_clicks(kafka_bootstrap, topic2, 2, partners=("p-001",), partition=0)
    created = active_subscription(flow, receiver)
    with loopback_only() as attempts:
        gateway()
        wait_for(lambda: len(receiver.deliveries()) >= 3, what="retries of the redirected request")
    assert all(a[0] == "127.0.0.1" for a in attempts)
    sub = flow.store.get(created["id"])
    assert "307" in sub.last_outcome and sub.delivered == 0
    assert flow.store.positions(created["id"])[0][0] == 0  # never moved without a 2xx


def test_two_gateways_share_the_partitions_and_take_over(tmp_path, kafka_bootstrap, make_topic, receiver):
    topic = make_topic(partitions=4)
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        produce_clicks(kafka_bootstrap, topic, 80, partners=("p-001",))
        active_subscription(flow, receiver)
        a = Gateway(flow.store, [flow.spec], kafka_bootstrap, flow.settings)
        b = Gateway(flow.store, [flow.spec], kafka_bootstrap, flow.settings)
        try:
            a.start()
            b.start()
            wait_for(lambda: len(a.workers) == 2 and len(b.workers) == 2, timeout=60, what="two partitions each")
            wait_for(lambda: len(receiver.deliveries()) >= 80, what="80 deliveries")
            assert len({r.headers["ce-id"] for r in receiver.deliveries()}) == 80
            a.stop()  # b takes a's partitions over (released on a clean stop; after a lease when killed)
            produce_clicks(kafka_bootstrap, topic, 40, partners=("p-001",), start=80)
            wait_for(lambda: len({r.headers["ce-id"] for r in receiver.deliveries()}) >= 120, what="after takeover")
            assert len(b.workers) == 4
        finally:
            a.stop()
            b.stop()


def test_records_the_lake_would_quarantine_are_never_sent(flow, gateway, receiver, kafka_bootstrap, topic2):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for value in (b'{"event_id":"bad1","partner_id":"p-001","kind":"click"}',  # no event_time: required
                  b'not json at all', b'{"event_id":"ok1","partner_id":"p-001","kind":"click","event_time":"2026-11-30T08:00:00Z"}'):
        producer.produce(topic2, value=value, partition=0)
    producer.flush(10)
    created = active_subscription(flow, receiver)
    gateway()
    wait_for(lambda: flow.store.positions(created["id"])[0][0] == 3, what="all three passed")
    assert [json.loads(r.body)["event_id"] for r in receiver.deliveries()] == ["ok1"]


def test_replay_from_an_offset_delivers_again_in_order(flow, gateway, receiver, kafka_bootstrap, topic2):
    produce_clicks(kafka_bootstrap, topic2, 10, partners=("p-001",), partition=0)
    created = active_subscription(flow, receiver)
    gateway()
    wait_for(lambda: len(receiver.deliveries()) == 10, what="the first pass")
    wait_for(lambda: flow.store.positions(created["id"])[0][0] == 10, what="the first pass committed")
    with flow.client("p-001") as c:
        resp = c.post(f"/subscriptions/{created['id']}/replay", json={"startfrom": {"0": 4}})
        assert resp.status_code == 200, resp.text
        assert c.post(f"/subscriptions/{created['id']}/replay", json={"startfrom": "tomorrow"}).status_code == 400
    with flow.client("p-002") as c:
        assert c.post(f"/subscriptions/{created['id']}/replay", json={"startfrom": "earliest"}).status_code == 404
    wait_for(lambda: len(receiver.deliveries()) == 16, what="the replay")
    wait_for(lambda: flow.store.positions(created["id"])[0][0] == 10, what="the replay committed")
    again = [int(r.headers["ce-sequence"]) for r in receiver.deliveries()[10:]]
    assert again == list(range(4, 10))


def test_unordered_allows_several_requests_at_once(flow, gateway, kafka_bootstrap, topic2):
    import threading

    inflight = {"now": 0, "max": 0}
    lock = threading.Lock()

    def slow(_r):
        with lock:
            inflight["now"] += 1
            inflight["max"] = max(inflight["max"], inflight["now"])
        time.sleep(0.05)  # a receiver that takes a moment, so requests overlap
        with lock:
            inflight["now"] -= 1
        return 200, {}

    receiver = Receiver(respond=slow).start()
    try:
        produce_clicks(kafka_bootstrap, topic2, 40, partners=("p-001",), partition=0)
        active_subscription(flow, receiver, ordered="false", maxinflight=4)
        gateway()
        wait_for(lambda: len({r.headers["ce-id"] for r in receiver.deliveries()}) == 40, what="all 40")
        assert 2 <= inflight["max"] <= 4  # one partition, yet several requests at once, never more than asked
    finally:
        receiver.stop()
