"""Pull delivery (connectors/gateway/pull.py) through the HTTP API against the embedded broker:
receive and acknowledge, long poll, lock expiry, release / reject / renewLock, two pullers,
order per partition, bad tokens, who may, and replay."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest

from connectors.gateway import FlowService, GatewayStore
from connectors.gateway.events import structured_request
from connectors.gateway.pull import PullService
from connectors.gateway.worker import dlq_topic_of
from connectors.kafka import ensure_topic
from connectors.metastore import Metastore
from tests.support import read_messages, wait_for
from tests.support.gateway import (
    OWNER,
    SOURCE,
    Flow,
    clicks_flow_spec,
    flow_env,
    produce_clicks,
    produce_history,
    test_settings,
)


def _pull_sub(flow: Flow, org: str = "p-001", **config: Any) -> str:
    body = {"source": SOURCE, "protocol": "HTTP", "filters": [{"exact": {"partnerid": org}}],
            "config": {"delivery": "pull", "startfrom": "earliest", **config}}
    with flow.client(org) as c:
        resp = c.post("/subscriptions", json=body)
    assert resp.status_code == 201, resp.text
    sub = resp.json()
    assert "sink" not in sub and sub["state"] == "pending_approval"
    flow.approve(sub["id"])
    return sub["id"]


def _receive(flow: Flow, sub_id: str, n: int = 100, wait: int = 0, org: str = "p-001") -> list[dict[str, Any]]:
    with flow.client(org) as c:
        resp = c.post(f"/subscriptions/{sub_id}:receive", params={"maxEvents": n, "maxWaitTime": wait})
    assert resp.status_code == 200, resp.text
    return resp.json()["value"]


def _settle(flow: Flow, sub_id: str, action: str, tokens: list[str], org: str = "p-001", **params: Any):
    with flow.client(org) as c:
        return c.post(f"/subscriptions/{sub_id}:{action}", json={"lockTokens": tokens}, params=params)


def _positions(flow: Flow, sub_id: str) -> dict[int, int]:
    return {p: o for p, (o, _) in flow.store.positions(sub_id).items()}


def _tokens(items: list[dict[str, Any]]) -> list[str]:
    return [i["brokerProperties"]["lockToken"] for i in items]


def test_receive_and_acknowledge_move_the_position_past_what_was_acknowledged(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1)
    produce_clicks(kafka_bootstrap, topic, 20)
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        sub_id = _pull_sub(flow, ordered=False)  # ordered would hold the partition until 4, 6 are settled
        items = _receive(flow, sub_id, n=4)
        assert [i["event"]["id"] for i in items] == [f"clicks-0-{o}" for o in (0, 2, 4, 6)]  # p-001's only
        assert all(i["brokerProperties"]["deliveryCount"] == 1 for i in items)
        ev = items[0]["event"]
        assert ev["sequence"] == f"{0:020d}" and ev["source"] == SOURCE and ev["data"]["partner_id"] == "p-001"
        assert ev["flowpartition"] == "0" and ev["partitionkey"] == "e0"
        # the same CloudEvent push's structured mode sends
        from connectors.gateway.events import to_event
        raw = to_event(flow.spec, 0, 0, b"e0", json.dumps(ev["data"]).encode(), None)
        assert raw is not None
        assert {k: v for k, v in ev.items() if k not in ("data", "time")} == {k: v for k, v in raw.attributes.items() if k != "time"}
        assert ev["time"].startswith("2026-11-30T08:00:00")
        assert _positions(flow, sub_id) == {0: 0}  # nothing acknowledged yet
        resp = _settle(flow, sub_id, "acknowledge", _tokens(items[:2]))
        assert resp.status_code == 200 and resp.json() == {"succeededLockTokens": _tokens(items[:2]), "failedLockTokens": []}
        assert _positions(flow, sub_id) == {0: 4}  # past offsets 0-3 (1, 3: p-002's, skipped); 4 still locked
        rest = _receive(flow, sub_id, n=100)
        assert [i["event"]["id"] for i in rest] == [f"clicks-0-{o}" for o in range(8, 20, 2)]
        assert _settle(flow, sub_id, "acknowledge", _tokens(items[2:]) + _tokens(rest)).status_code == 200
        assert _positions(flow, sub_id) == {0: 20}
        assert _receive(flow, sub_id) == []
        with flow.client("p-001") as c:
            assert c.get(f"/subscriptions/{sub_id}").json()["status"]["delivered"] == 10


def test_structured_bytes_are_those_of_push(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1)
    produce_clicks(kafka_bootstrap, topic, 2)
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        sub_id = _pull_sub(flow)
        pull = _pull_service(flow)
        got = pull.receive("p-001", sub_id, 10)
        assert len(got) == 1
        body = got[0].json_bytes()
        assert body.endswith(b',"event":' + structured_request(got[0].event)[1] + b"}")


def _pull_service(flow: Flow) -> PullService:
    return PullService(flow.service)


def test_a_long_poll_answers_when_events_arrive(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1)
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        sub_id = _pull_sub(flow)
        started = time.monotonic()
        assert _receive(flow, sub_id, wait=1) == []  # nothing: answered empty at maxWaitTime
        assert 0.9 <= time.monotonic() - started < 5
        timer = threading.Timer(1.5, produce_clicks, args=(kafka_bootstrap, topic, 4))
        timer.start()
        started = time.monotonic()
        items = _receive(flow, sub_id, n=10, wait=30)
        took = time.monotonic() - started
        timer.join()
        assert [i["event"]["id"] for i in items][:1] == ["clicks-0-0"]
        assert 1.4 <= took < 15, took  # waited for the events, not for maxWaitTime


def test_an_expired_lock_delivers_again_exactly_the_unacknowledged(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1)
    produce_clicks(kafka_bootstrap, topic, 20)
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        sub_id = _pull_sub(flow, lockduration=1)
        items = _receive(flow, sub_id, n=10)
        assert len(items) == 10
        acked = items[:3] + items[5:6]
        assert _settle(flow, sub_id, "acknowledge", _tokens(acked)).status_code == 200
        assert _receive(flow, sub_id) == []  # ordered: the partition is held while locks are live
        time.sleep(1.3)  # the 1 s locks run out: time passing is the rule under test
        again = _receive(flow, sub_id, n=100)
        expected = [i["event"]["id"] for i in items if i not in acked]
        assert [i["event"]["id"] for i in again] == expected
        assert all(i["brokerProperties"]["deliveryCount"] == 2 for i in again)
        assert set(_tokens(again)).isdisjoint(_tokens(items))  # new tokens
        old = _settle(flow, sub_id, "acknowledge", _tokens(items[3:5]))
        assert old.status_code == 400 and _tokens(items)[3] in old.json()["error"]
        assert {f["error"]["code"] for f in old.json()["failedLockTokens"]} == {"LockTokenNotFound"}
        assert _positions(flow, sub_id) == {0: 6}  # 0,2,4 acknowledged; 6 (the 4th) delivered again


def test_release_reject_and_renew(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1)
    produce_clicks(kafka_bootstrap, topic, 6)
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        sub_id = _pull_sub(flow, lockduration=3, ordered=False)
        a, b, c = _receive(flow, sub_id, n=3)
        assert _settle(flow, sub_id, "release", _tokens([a])).status_code == 200
        again = _receive(flow, sub_id, n=10)
        assert [(i["event"]["id"], i["brokerProperties"]["deliveryCount"]) for i in again] == [(a["event"]["id"], 2)]
        # renewLock: the lock outlives its first duration. Renewed at once first: the receive of
        # `again` may have taken a while of b's and c's 3 s on a busy machine.
        for pause in (0, 1.2, 1.2, 1.2):  # 3.6 s after the first renewal: past a 3 s lock
            time.sleep(pause)  # time passing is the scenario: renew before the lock runs out
            renewed = _settle(flow, sub_id, "renewLock", _tokens([b, c, *again]))
            assert renewed.json()["succeededLockTokens"] == _tokens([b, c, *again])
        assert _settle(flow, sub_id, "acknowledge", _tokens([b])).status_code == 200
        # reject: to the dead letter, as push's, and never delivered again
        assert _settle(flow, sub_id, "reject", _tokens([c])).status_code == 200
        dlq = read_messages(kafka_bootstrap, dlq_topic_of(flow.spec, sub_id))
        assert [dict(m.headers())["ce_id"].decode() for m in dlq] == [c["event"]["id"]]
        assert json.loads(dlq[0].value()) == c["event"]["data"]
        # release with a delay: not handed out before it
        assert _settle(flow, sub_id, "renewLock", _tokens(again)).status_code == 200  # the dead letter took a while
        assert _settle(flow, sub_id, "release", _tokens(again), releaseDelayInSeconds=10).status_code == 200
        assert _receive(flow, sub_id, n=10) == []
        bad = _settle(flow, sub_id, "release", _tokens(again), releaseDelayInSeconds=7)
        assert bad.status_code == 400 and "releaseDelayInSeconds" in bad.json()["error"]
        with flow.client("p-001") as cl:
            status = cl.get(f"/subscriptions/{sub_id}").json()["status"]
        assert status["delivered"] == 1 and status["deadlettered"] == 1
        assert _positions(flow, sub_id) == {0: 0}  # offset 0 (released, delayed) is not settled


def test_max_delivery_count_sends_an_event_never_acknowledged_to_the_dead_letter(tmp_path, kafka_bootstrap, make_topic):
    """Event Grid's maxDeliveryCount: after N deliveries without acknowledge (expired or released),
    the event goes to the dead letter instead of out again; the position moves past it."""
    topic = make_topic(partitions=1)
    produce_clicks(kafka_bootstrap, topic, 6)  # p-001: offsets 0, 2, 4
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        sub_id = _pull_sub(flow, lockduration=1, maxdeliverycount=2)
        first = _receive(flow, sub_id, n=10)
        assert [i["event"]["id"] for i in first] == ["clicks-0-0", "clicks-0-2", "clicks-0-4"]
        assert _settle(flow, sub_id, "acknowledge", _tokens(first[:1])).status_code == 200
        second = wait_for(lambda: _receive(flow, sub_id, n=10), timeout=10, what="the expired locks")
        assert [(i["event"]["id"], i["brokerProperties"]["deliveryCount"]) for i in second] == \
            [("clicks-0-2", 2), ("clicks-0-4", 2)]
        assert _settle(flow, sub_id, "release", _tokens(second[:1])).status_code == 200  # released: not acknowledged
        wait_for(lambda: _positions(flow, sub_id) == {0: 6} or _receive(flow, sub_id, n=10), timeout=10,
                 what="the position past the dead-lettered events")
        assert _positions(flow, sub_id) == {0: 6}
        assert _receive(flow, sub_id, n=10) == []  # never delivered a third time
        dlq = read_messages(kafka_bootstrap, dlq_topic_of(flow.spec, sub_id))
        headers = [dict(m.headers()) for m in dlq]
        assert [h["ce_id"].decode() for h in headers] == ["clicks-0-2", "clicks-0-4"]
        assert {h["flowsuite.flow.attempts"] for h in headers} == {b"2"}
        assert all(b"maxdeliverycount" in h["flowsuite.flow.outcome"] for h in headers)
        with flow.client("p-001") as c:
            status = c.get(f"/subscriptions/{sub_id}").json()["status"]
            assert status["delivered"] == 1 and status["deadlettered"] == 2
            body = {"source": SOURCE, "protocol": "HTTP", "filters": [{"exact": {"partnerid": "p-001"}}]}
            for config, why in (({"delivery": "pull", "maxdeliverycount": 11}, "from 1 to 10"),
                                ({"delivery": "pull", "maxdeliverycount": 0}, "from 1 to 10"),
                                ({"maxdeliverycount": 3}, "applies only to config.delivery: pull")):
                r = c.post("/subscriptions", json={**body, "config": config, **({} if "delivery" in config else
                                                                               {"sink": "http://127.0.0.1:9/x"})})
                assert r.status_code == 400 and why in r.text and "maxdeliverycount" in r.text, r.text


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
@pytest.mark.parametrize("ordered", [False, True])
def test_two_pullers_never_hold_the_same_unexpired_lock(db, ordered, request, tmp_path, kafka_bootstrap, make_topic):
    """Two pull services (as two gateway processes: only the metastore is shared) receive and
    acknowledge at once; no event is handed to both, none is lost."""
    topic = make_topic(partitions=2)
    produce_clicks(kafka_bootstrap, topic, 200)
    url = f"sqlite:///{tmp_path / 'm.db'}" if db == "sqlite" else request.getfixturevalue("pg_fresh_url")
    spec = clicks_flow_spec(topic, auto_approve=["p-001"])
    metastore = Metastore(url)
    try:
        service = FlowService(GatewayStore(metastore), [spec], test_settings(), kafka_bootstrap)
        sub, _ = service.create("p-001", {"source": SOURCE, "protocol": "HTTP", "filters": [{"exact": {"partnerid": "p-001"}}],
                                          "config": {"delivery": "pull", "startfrom": "earliest", "ordered": ordered}})
        assert sub.state == "active"
        got: dict[str, list[str]] = {"a": [], "b": []}
        pullers = {name: PullService(service) for name in got}
        errors: list[BaseException] = []

        def pull(name: str) -> None:
            try:
                empty = 0
                while empty < 5:
                    items = pullers[name].receive("p-001", sub.id, 7)
                    got[name] += [i.event.id for i in items]
                    empty = 0 if items else empty + 1
                    if items:
                        settled = pullers[name].settle("p-001", sub.id, "acknowledge", [i.token for i in items])
                        assert not settled["failedLockTokens"], settled
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
                errors.append(exc)

        threads = [threading.Thread(target=pull, args=(n,)) for n in got]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert not errors, errors
        assert got["a"] and got["b"], got  # both took part
        assert set(got["a"]).isdisjoint(got["b"])
        assert len(got["a"]) + len(got["b"]) == len(set(got["a"]) | set(got["b"])) == 100
        ends = {p: o for p, (o, _) in service.store.positions(sub.id).items()}
        assert set(ends) == {0, 1} and sum(ends.values()) == 200  # every partition past its last record
    finally:
        metastore.dispose()


def test_ordered_keeps_a_partition_to_one_batch_at_a_time_in_offset_order(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=2)
    produce_clicks(kafka_bootstrap, topic, 80)
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        sub_id = _pull_sub(flow)
        first = _receive(flow, sub_id, n=200)
        parts = {i["event"]["flowpartition"] for i in first}
        assert parts == {"0", "1"}
        # a second puller gets nothing of a partition while the first holds locks of it
        assert _receive(flow, sub_id, n=200) == []
        seen: dict[str, list[int]] = {}
        for i in first:
            seen.setdefault(i["event"]["flowpartition"], []).append(int(i["event"]["sequence"]))
        assert all(s == sorted(s) for s in seen.values())
        # acknowledge partition 0 only: partition 1 stays held, 0 is free (and has nothing left)
        p0 = [i for i in first if i["event"]["flowpartition"] == "0"]
        assert _settle(flow, sub_id, "acknowledge", _tokens(p0)).status_code == 200
        produce_clicks(kafka_bootstrap, topic, 10, start=80)
        more = wait_for(lambda: _receive(flow, sub_id, n=200), what="new events")
        assert more and all(i["event"]["flowpartition"] != "1" for i in more), more
        assert min(int(i["event"]["sequence"]) for i in more) > max(seen["0"])


def test_bad_tokens_and_bodies_get_a_4xx_that_names_them(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1)
    produce_clicks(kafka_bootstrap, topic, 4)
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        sub_id = _pull_sub(flow)
        items = _receive(flow, sub_id, n=10)
        resp = _settle(flow, sub_id, "acknowledge", ["not-a-token"])
        assert resp.status_code == 400 and "'not-a-token'" in resp.json()["error"]
        assert resp.json()["failedLockTokens"][0]["lockToken"] == "not-a-token"
        mixed = _settle(flow, sub_id, "acknowledge", [*_tokens(items), "nope"])
        assert mixed.status_code == 200
        assert mixed.json()["succeededLockTokens"] == _tokens(items)
        assert [f["lockToken"] for f in mixed.json()["failedLockTokens"]] == ["nope"]
        with flow.client("p-001") as c:
            for body, words in (({"lockTokens": []}, "1 to 1000"), ({"lockTokens": [5]}, "lockTokens[0]"),
                                ({"tokens": ["x"]}, '{"lockTokens"'), ({"lockTokens": ["a", "a"]}, "twice")):
                r = c.post(f"/subscriptions/{sub_id}:acknowledge", json=body)
                assert r.status_code == 400 and words in r.json()["error"], (body, r.text)
            r = c.post(f"/subscriptions/{sub_id}:receive", params={"maxEvents": 1001})
            assert r.status_code == 400 and "maxEvents" in r.json()["error"]
            r = c.post(f"/subscriptions/{sub_id}:receive", params={"maxWaitTime": 61})
            assert r.status_code == 400 and "maxWaitTime" in r.json()["error"]
            r = c.post(f"/subscriptions/{sub_id}:frobnicate", json={"lockTokens": ["x"]})
            assert r.status_code == 404 and "frobnicate" in r.json()["error"]


def test_only_the_subscriber_receives(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1)
    produce_clicks(kafka_bootstrap, topic, 4)
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        body = {"source": SOURCE, "protocol": "HTTP", "filters": [{"exact": {"partnerid": "p-001"}}],
                "config": {"delivery": "pull"}}
        with flow.client("p-001") as c:
            pending = c.post("/subscriptions", json=body).json()["id"]
            r = c.post(f"/subscriptions/{pending}:receive")
            assert r.status_code == 409 and "approved" in r.json()["error"]
            r = c.post("/subscriptions", json={**body, "sink": "http://127.0.0.1:9/hook"})
            assert r.status_code == 400 and "no sink" in r.json()["error"]
            r = c.put(f"/subscriptions/{pending}", json={**body, "sink": None, "config": {"delivery": "push"}})
            assert r.status_code == 400, r.text
        sub_id = _pull_sub(flow)
        with flow.client("p-002") as c:
            r = c.post(f"/subscriptions/{sub_id}:receive")
            assert r.status_code == 404
            r = c.post(f"/subscriptions/{sub_id}:acknowledge", json={"lockTokens": ["x"]})
            assert r.status_code == 404
        with flow.client(OWNER) as c:
            r = c.post(f"/subscriptions/{sub_id}:receive")
            assert r.status_code == 403 and "subscriber" in r.json()["error"]
        with flow.api.client(None) as c:
            assert c.post(f"/subscriptions/{sub_id}:receive").status_code == 401


def test_replay_moves_the_pull_position_and_voids_the_locks(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=1)
    produce_clicks(kafka_bootstrap, topic, 10)
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        sub_id = _pull_sub(flow)
        items = _receive(flow, sub_id, n=100)
        assert _settle(flow, sub_id, "acknowledge", _tokens(items[:3])).status_code == 200
        with flow.client("p-001") as c:
            r = c.post(f"/subscriptions/{sub_id}/replay", json={"startfrom": {"0": 2}})
            assert r.status_code == 200, r.text
        again = _receive(flow, sub_id, n=100)
        assert [i["event"]["id"] for i in again] == [f"clicks-0-{o}" for o in range(2, 10, 2)]
        assert all(i["brokerProperties"]["deliveryCount"] == 1 for i in again)
        stale = _settle(flow, sub_id, "acknowledge", _tokens(items[3:]))
        assert stale.status_code == 400  # tokens of before the replay are void
        assert _settle(flow, sub_id, "acknowledge", _tokens(again)).status_code == 200
        assert _positions(flow, sub_id) == {0: 10}


def test_the_push_engine_leaves_pull_subscriptions_alone(tmp_path, kafka_bootstrap, make_topic):
    from connectors.gateway.gateway import Gateway

    topic = make_topic(partitions=1)
    produce_clicks(kafka_bootstrap, topic, 4)
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        sub_id = _pull_sub(flow)
        gw = Gateway(flow.store, [flow.spec], kafka_bootstrap, flow.settings)
        try:
            assert gw.tick() == 0
        finally:
            gw.stop()
        assert len(_receive(flow, sub_id)) == 2


def test_a_position_the_broker_no_longer_holds_is_a_clear_409(tmp_path, broker):
    """The topic lost offsets 0..49 (tests/support/tansu.py): a pull from 0 says so and how to go
    on (history from the lake is not served to pull yet); a replay to what the broker holds works."""
    topic = f"test.pull.truncated.{uuid.uuid4().hex[:8]}"
    ensure_topic(broker.bootstrap, topic, 1)
    produce_history(broker.bootstrap, topic, 120, partitions=1)
    with flow_env(tmp_path, broker.bootstrap, topic) as flow:
        body = {"source": SOURCE, "protocol": "HTTP", "filters": [{"exact": {"partnerid": "p-001"}}],
                "config": {"delivery": "pull", "startfrom": {"0": 0}}}
        with flow.client("p-001") as c:
            sub_id = c.post("/subscriptions", json=body).json()["id"]
        flow.approve(sub_id)
        assert broker.truncate(topic, {0: 50}) == {0: 50}
        flow.service.bootstrap = broker.bootstrap  # the broker restarted (on another port, perhaps)
        with flow.client("p-001") as c:
            r = c.post(f"/subscriptions/{sub_id}:receive", params={"maxEvents": 10})
            assert r.status_code == 409 and "offset 0 is no longer on the broker" in r.json()["error"], r.text
            assert c.post(f"/subscriptions/{sub_id}/replay", json={"startfrom": {"0": 50}}).status_code == 200
        items = _receive(flow, sub_id, n=1000)
        assert items and min(int(i["event"]["sequence"]) for i in items) >= 50


def test_below_the_low_watermark_pull_serves_the_lake_then_kafka_without_gap_or_double(tmp_path, broker):
    """The topic lost offsets 0..49 after the lake landed them: a pull from 0 gets 0..49 from the
    lake and 50.. from Kafka — every p-001 event once, in offset order, with the ids, sequences and
    attributes of the Kafka read before the truncation, and the same record as JSON."""
    from connectors.lake import Lake
    from tests.support.gateway import land_all

    topic = f"test.pull.lake.{uuid.uuid4().hex[:8]}"
    ensure_topic(broker.bootstrap, topic, 1)
    produce_history(broker.bootstrap, topic, 120, partitions=1)
    with flow_env(tmp_path, broker.bootstrap, topic) as flow:
        expected = _kafka_events(flow, broker.bootstrap)
        lake = Lake(str(tmp_path / "lake"))
        land_all(flow.spec, lake, flow.store.metastore, broker.bootstrap, runs_of=70)
        sub_id = _pull_sub(flow, startfrom={"0": 0})
        assert broker.truncate(topic, {0: 50}) == {0: 50}
        flow.service.bootstrap = broker.bootstrap
        with flow.client("p-001") as c:  # no lake configured: the clear 409, naming why
            def answered():  # the broker was just restarted: until it serves fetches, a receive is rightly empty
                r = c.post(f"/subscriptions/{sub_id}:receive", params={"maxEvents": 10})
                return r if r.status_code != 200 or r.json()["value"] else None

            r = wait_for(answered, timeout=60, what="a receive that is not empty")
            assert r.status_code == 409 and "no lake configured" in r.json()["error"], r.text
        flow.service.lake = lake
        got: list[dict[str, Any]] = []
        for _ in range(20):  # small receives: the lake/Kafka seam falls inside one of them
            items = _receive(flow, sub_id, n=7, wait=2)  # a long poll: empty only at the end
            if not items:
                break
            got += items
            assert _settle(flow, sub_id, "acknowledge", _tokens(items)).status_code == 200
        ids = [i["event"]["id"] for i in got]
        assert ids == [e.id for e in expected] and len(set(ids)) == len(ids)
        assert min(e.offset for e in expected) < 50 < max(e.offset for e in expected)
        for item, ev in zip(got, expected, strict=True):
            assert {k: v for k, v in item["event"].items() if k != "data"} == ev.attributes
            assert item["event"]["data"] == json.loads(ev.data)
        assert _positions(flow, sub_id) == {0: 120}


def _kafka_events(flow: Flow, bootstrap: str):
    """p-001's events of partition 0 as a read from Kafka makes them (before any truncation)."""
    from connectors.formats import Batch, decoder_for
    from connectors.gateway.events import events_from_batch

    msgs = read_messages(bootstrap, flow.spec.topic, partitions=1)  # partition 0
    decoded = decoder_for(flow.spec).decode(Batch(0, [m.value() for m in msgs], [m.key() for m in msgs],
                                                  [m.offset() for m in msgs], [m.timestamp()[1] for m in msgs]))
    events = events_from_batch(flow.spec, 0, {m.offset(): m for m in msgs}, decoded.valid)
    return [e for e in events if e.attributes.get("partnerid") == "p-001"]
