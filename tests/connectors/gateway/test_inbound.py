"""Inbound flow: another organisation's signed CloudEvents through `POST /inbound/<product>`
(real HTTP on loopback, the real broker, a SQLite metastore, landing into a local lake).

Every refusal is a clear 4xx/5xx and leaves the topic as it was; every accepted event reaches
the topic (acknowledged before the 2xx) and lands once, however often it is sent."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from connectors.gateway.inbound import InboundSettings
from connectors.gateway.signing import webhook_headers
from tests.support import holding_write_lock
from tests.support.inbound import (
    ORG,
    ORIGIN,
    SECRET_ENV,
    SOURCE,
    TYPE,
    click,
    inbound_env,
    inbound_spec,
    new_secret,
    structured,
    topic_records,
)


def test_a_signed_batch_is_acknowledged_then_lands_once(tmp_path, kafka_bootstrap, topic):
    with inbound_env(tmp_path, kafka_bootstrap, topic) as ib:
        events = [structured(i) for i in range(40)]
        resp = ib.sender().batch(events, "batch-clicks-0-0-to-39")
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert (answer["received"], answer["accepted"], answer["quarantined"], answer["duplicates"]) == (40, 40, 0, 0)
        assert answer["sender"] == ORG and answer["events"] == []
        # 2xx only after the broker acknowledged: the records are readable now, each once
        assert ib.topic_ids() == {f"clicks-0-{i}": 1 for i in range(40)}
        result = ib.land()
        assert result.landed == 40 and result.quarantined == 0
        assert ib.lake_ids() == {f"clicks-0-{i}": 1 for i in range(40)}
        headers = dict(topic_records(kafka_bootstrap, topic)[0].headers())
        assert headers["flowsuite.inbound.org"] == ORG.encode()  # the sending organisation rides along


def test_binary_and_structured_modes_land_the_same_rows(tmp_path, kafka_bootstrap, topic):
    with inbound_env(tmp_path, kafka_bootstrap, topic) as ib:
        sender = ib.sender()
        a = sender.binary(structured(1, subject="e1"))
        b = sender.one(structured(2, subject="e2"))
        assert (a.status_code, b.status_code) == (200, 200), (a.text, b.text)
        assert a.json()["mode"] == "binary" and b.json()["mode"] == "structured"
        ib.land()
        rows = sorted(ib.lake.read_tables([f.path for f in ib.metastore.live_files(ib.spec.name)],
                                          columns=["event_id", "kind", "ce_id", "ce_source", "ce_type", "ce_subject"]).to_pylist(),
                      key=lambda r: r["ce_id"])
        assert rows == [
            {"event_id": "e1", "kind": "click", "ce_id": "clicks-0-1", "ce_source": SOURCE, "ce_type": TYPE, "ce_subject": "e1"},
            {"event_id": "e2", "kind": "click", "ce_id": "clicks-0-2", "ce_source": SOURCE, "ce_type": TYPE, "ce_subject": "e2"},
        ]


def test_percent_encoded_binary_header_values_are_decoded(tmp_path, kafka_bootstrap, topic):
    with inbound_env(tmp_path, kafka_bootstrap, topic) as ib:
        resp = ib.sender().binary(structured(3, subject="Euro%20%E2%82%AC"))
        assert resp.status_code == 200, resp.text
        ib.land()
        (row,) = ib.lake.read_tables([f.path for f in ib.metastore.live_files(ib.spec.name)], columns=["ce_subject"]).to_pylist()
        assert row["ce_subject"] == "Euro €"
        bad = ib.sender().binary(structured(4, subject="%C0%A0"))  # overlong UTF-8: must be rejected
        assert bad.status_code == 400 and "UTF-8" in bad.json()["error"]


def test_the_handshake_consents_only_to_registered_origins(tmp_path, kafka_bootstrap, topic):
    spec = inbound_spec(topic, senders=[{"org": ORG, "secret_env": SECRET_ENV, "origins": [ORIGIN],
                                         "sources": [SOURCE], "rate": 600}])
    with inbound_env(tmp_path, kafka_bootstrap, topic, spec=spec) as ib, httpx.Client(trust_env=False) as c:
        url = ib.server.url + "/inbound/ads_clicks"
        ok = c.options(url, headers={"WebHook-Request-Origin": ORIGIN, "WebHook-Request-Rate": "120"})
        assert ok.status_code == 200
        assert ok.headers["webhook-allowed-origin"] == ORIGIN
        assert ok.headers["webhook-allowed-rate"] == "120"  # the lower of what was asked and what is allowed
        assert "POST" in ok.headers["allow"]
        assert c.options(url, headers={"WebHook-Request-Origin": ORIGIN}).headers["webhook-allowed-rate"] == "600"
        stranger = c.options(url, headers={"WebHook-Request-Origin": "evil.example"})
        assert stranger.status_code == 200 and "webhook-allowed-origin" not in stranger.headers  # no consent
        assert "webhook-allowed-origin" not in c.options(url).headers
        assert c.options(ib.server.url + "/inbound/nope", headers={"WebHook-Request-Origin": ORIGIN}).status_code == 404


def test_bad_signature_stale_timestamp_unknown_sender_are_401_and_land_nothing(tmp_path, kafka_bootstrap, topic):
    with inbound_env(tmp_path, kafka_bootstrap, topic) as ib:
        event = structured(1)
        body = json.dumps(event).encode()
        sender = ib.sender()
        headers = {"content-type": "application/cloudevents+json"}
        assert sender.post(body, headers, "m1").status_code == 200  # signed as sent: taken
        signed = {**headers, **webhook_headers([ib.secret], "m7", body), "WebHook-Request-Origin": ORIGIN}
        cases = {
            "tampered body": httpx.post(ib.server.url + "/inbound/ads_clicks", headers=signed, trust_env=False,
                                        content=body.replace(b'"e1"', b'"e9"')),
            "bad signature": sender.post(body, headers, "m2", secrets_=[new_secret()]),
            "stale timestamp": sender.post(body, headers, "m3", timestamp=int(time.time()) - 400),
            "from the future": sender.post(body, headers, "m4", timestamp=int(time.time()) + 400),
            "unknown origin": ib.sender(origin="stranger.example").post(body, headers, "m5"),
            "unknown sender, no origin": ib.sender(origin=None, secret=new_secret()).post(body, headers, "m6"),
        }
        reasons = {what: (r.status_code, r.json()["error"]) for what, r in cases.items()}
        assert all(status == 401 for status, _ in reasons.values()), reasons
        assert "verifies" in reasons["bad signature"][1] and "verifies" in reasons["tampered body"][1]
        assert "400 s old" in reasons["stale timestamp"][1] or "old" in reasons["stale timestamp"][1]
        assert "future" in reasons["from the future"][1]
        assert "stranger.example" in reasons["unknown origin"][1]
        no_headers = httpx.post(ib.server.url + "/inbound/ads_clicks", content=body, headers=headers, trust_env=False)
        assert no_headers.status_code == 401 and "webhook-id" in no_headers.json()["error"]
        assert ib.topic_ids() == {"clicks-0-1": 1}  # only the properly signed one


def test_someone_elses_product_is_refused(tmp_path, kafka_bootstrap, make_topic):
    other_topic = make_topic()
    mine = inbound_spec(make_topic())
    theirs = inbound_spec(other_topic, name="other_clicks",
                          senders=[{"org": "partner-x", "secret_env": "FLOWSUITE_INBOUND_X_SECRET",
                                    "origins": ["x.example"], "sources": [SOURCE]}])
    from connectors.gateway import FlowService, GatewayStore
    from connectors.gateway.inbound import InboundService
    from connectors.metastore import Metastore
    from tests.support.gateway import test_settings
    from tests.support.inbound import InboundServer, Sender, topic_ce_ids

    secret, x_secret = new_secret(), new_secret()
    ms = Metastore(f"sqlite:///{tmp_path / 'm.db'}")
    service = InboundService([mine, theirs], {SECRET_ENV: secret, "FLOWSUITE_INBOUND_X_SECRET": x_secret}, ms, kafka_bootstrap)
    server = InboundServer(service, FlowService(GatewayStore(ms), [mine, theirs], test_settings(), kafka_bootstrap))
    try:
        ads = Sender(server.url, secret)
        assert ads.one(structured(1)).status_code == 200
        resp = ads.one(structured(2), path="/inbound/other_clicks")  # ads is no sender of other_clicks
        assert resp.status_code == 401 and "other_clicks" in resp.json()["error"]
        forged = Sender(server.url, secret, origin="x.example").one(structured(3), path="/inbound/other_clicks")
        assert forged.status_code == 401  # x's origin, ads' secret: does not verify
        assert resp.status_code == 401 and topic_ce_ids(kafka_bootstrap, other_topic) == {}
        assert Sender(server.url, secret).one(structured(4), path="/inbound/nothing_here").status_code == 404
    finally:
        server.stop()
        service.close()
        ms.dispose()


def test_an_oversized_body_is_413_before_anything_else(tmp_path, kafka_bootstrap, topic):
    spec = inbound_spec(topic, max_body_bytes=4096)
    with inbound_env(tmp_path, kafka_bootstrap, topic, spec=spec) as ib:
        resp = ib.sender().batch([structured(i) for i in range(40)], "big")
        assert resp.status_code == 413 and "4096" in resp.json()["error"]
        chunked = httpx.post(ib.server.url + "/inbound/ads_clicks", content=iter([b"[" + b" " * 5000 + b"]"]),
                             headers={"content-type": "application/cloudevents-batch+json"}, trust_env=False)
        assert chunked.status_code == 413  # no content-length: counted while reading
        assert ib.topic_ids() == {}


def test_malformed_cloudevents_are_400_or_415_naming_the_event_and_nothing_is_taken(tmp_path, kafka_bootstrap, topic):
    with inbound_env(tmp_path, kafka_bootstrap, topic) as ib:
        sender = ib.sender()
        events = [structured(0), structured(1, id=None), structured(2, specversion="0.3"), structured(3, time="yesterday")]
        resp = sender.batch(events, "bad-batch")
        assert resp.status_code == 400
        problems = {p["index"]: p["reason"] for p in resp.json()["events"]}
        assert set(problems) == {1, 2, 3}
        assert "id" in problems[1] and "0.3" in problems[2] and "RFC 3339" in problems[3]
        not_json = sender.post(b"{nope", {"content-type": "application/cloudevents+json"}, "bad-json")
        assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
        avro = sender.post(b"\x00\x01", {"content-type": "application/cloudevents+avro"}, "avro")
        assert avro.status_code == 415
        no_ce = sender.post(json.dumps(click(5)).encode(), {"content-type": "application/json"}, "plain-json")
        assert no_ce.status_code == 400 and "ce-" in no_ce.json()["error"]
        nested = sender.one(structured(6, flowpartition={"a": 1}))
        assert nested.status_code == 400 and nested.json()["events"][0]["index"] == 0
        assert ib.topic_ids() == {}


def test_duplicates_by_webhook_id_and_by_ce_id_land_once(tmp_path, kafka_bootstrap, topic):
    with inbound_env(tmp_path, kafka_bootstrap, topic) as ib:
        sender = ib.sender()
        events = [structured(i) for i in range(10)]
        first = sender.batch(events, "batch-0-9")
        again = sender.batch(events, "batch-0-9")  # a retry: same webhook-id, signed anew
        assert first.status_code == again.status_code == 200
        assert again.json()["duplicate"] is True and again.json()["accepted"] == first.json()["accepted"]
        assert ib.topic_ids() == {f"clicks-0-{i}": 1 for i in range(10)}  # the retry produced nothing
        # The same events cut into another batch (a sender restarted elsewhere): new webhook-id,
        # so they reach the topic again; the product's ce_id de-duplication lands them once.
        recut = sender.batch([structured(i) for i in range(5, 15)] + [structured(14)], "batch-5-14")
        assert recut.status_code == 200 and recut.json()["duplicates"] == 1  # id 14 twice in one request
        assert sum(ib.topic_ids().values()) == 20
        result = ib.land()
        assert ib.lake_ids() == {f"clicks-0-{i}": 1 for i in range(15)}
        assert result.quarantined == 5  # the copies, quarantined as duplicate ce_id: consumed = landed + quarantined


def test_invalid_data_is_quarantined_and_the_sender_is_told_which_and_why(tmp_path, kafka_bootstrap, topic):
    with inbound_env(tmp_path, kafka_bootstrap, topic) as ib:
        sender = ib.sender()
        events = [structured(0), structured(1, data={**click(1), "partner_id": "partner-7"}), structured(2)]
        resp = sender.batch(events, "mixed")
        assert resp.status_code == 200
        body = resp.json()
        assert (body["accepted"], body["quarantined"]) == (2, 1)
        (item,) = body["events"]
        assert item["index"] == 1 and item["id"] == "clicks-0-1" and item["outcome"] == "quarantined"
        assert "partner_id" in item["reason"]
        single = sender.one(structured(3, data={**click(3), "kind": "swipe"}))
        assert single.status_code == 400 and "quarantine" in single.json()["error"]
        assert single.json()["events"][0]["id"] == "clicks-0-3"
        result = ib.land()
        assert (result.landed, result.quarantined) == (2, 2)
        assert set(ib.lake_ids()) == {"clicks-0-0", "clicks-0-2"}
        from tests.support.inbound import lake_ce_ids

        assert lake_ce_ids(ib.lake, ib.metastore, ib.spec.name, kind="quarantine") == {"clicks-0-1": 1, "clicks-0-3": 1}


def test_a_source_or_type_the_sender_may_not_send_is_403(tmp_path, kafka_bootstrap, topic):
    with inbound_env(tmp_path, kafka_bootstrap, topic) as ib:
        sender = ib.sender()
        wrong_source = sender.batch([structured(0), structured(1, source="/flowsuite/products/orders")], "s")
        assert wrong_source.status_code == 403 and wrong_source.json()["events"][0]["index"] == 1
        wrong_type = sender.one(structured(2, type="com.example.other"))
        assert wrong_type.status_code == 403 and "type" in wrong_type.json()["events"][0]["reason"]
        assert ib.topic_ids() == {}


def test_a_sender_over_its_rate_gets_429_with_retry_after(tmp_path, kafka_bootstrap, topic):
    spec = inbound_spec(topic, senders=[{"org": ORG, "secret_env": SECRET_ENV, "origins": [ORIGIN],
                                         "sources": [SOURCE], "rate": 6}])  # one every 10 s, a burst of 2
    with inbound_env(tmp_path, kafka_bootstrap, topic, spec=spec) as ib:
        sender = ib.sender()
        answers = [sender.one(structured(i)) for i in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert 1 <= int(answers[2].headers["retry-after"]) <= 10
        assert ib.topic_ids() == {"clicks-0-0": 1, "clicks-0-1": 1}


def test_rotation_accepts_the_previous_secret_only_during_its_grace(tmp_path, kafka_bootstrap, make_topic):
    old, new = new_secret(), new_secret()
    for until, expected in ((datetime.now(UTC) + timedelta(hours=1), 200), (datetime.now(UTC) - timedelta(seconds=1), 401)):
        topic = make_topic()
        spec = inbound_spec(topic, senders=[{"org": ORG, "secret_env": SECRET_ENV, "origins": [ORIGIN], "sources": [SOURCE],
                                             "previous_secret_env": "FLOWSUITE_INBOUND_ADS_OLD", "previous_until": until}])
        (tmp_path / str(expected)).mkdir()
        env = {SECRET_ENV: new, "FLOWSUITE_INBOUND_ADS_OLD": old}
        with inbound_env(tmp_path / str(expected), kafka_bootstrap, topic, spec=spec, env=env) as ib:
            assert ib.sender(secret=new).one(structured(1)).status_code == 200
            assert ib.sender(secret=old).one(structured(2)).status_code == expected
            both = ib.sender().one(structured(3), secrets_=[new, old])  # the sender signs with both
            assert both.status_code == 200


def test_a_missing_secret_is_a_warning_and_its_requests_are_401(tmp_path, kafka_bootstrap, topic):
    with inbound_env(tmp_path, kafka_bootstrap, topic, env={}) as ib:
        assert any(SECRET_ENV in w and "not set" in w for w in ib.service.warnings)
        resp = ib.sender(secret=new_secret()).one(structured(1))
        assert resp.status_code == 401 and "no secret" in resp.json()["error"]
        ok = httpx.options(ib.server.url + "/inbound/ads_clicks", headers={"WebHook-Request-Origin": ORIGIN}, trust_env=False)
        assert ok.headers["webhook-allowed-origin"] == ORIGIN  # the handshake does not need it


def test_a_broker_that_is_down_gets_503_and_nothing_is_acknowledged(tmp_path, kafka_bootstrap, topic):
    from orchestration.services.broker import free_port

    dead = f"127.0.0.1:{free_port()}"
    with inbound_env(tmp_path, dead, topic, settings=InboundSettings(ack_timeout_s=2, busy_retry_after_s=3)) as ib:
        started = time.monotonic()
        resp = ib.sender().batch([structured(i) for i in range(5)], "while-down")
        assert resp.status_code == 503, resp.text
        assert resp.headers["retry-after"] == "3" and "nothing" in resp.json()["error"]
        assert time.monotonic() - started < 10
        assert ib.service.log.get(ib.spec.name, ORG, "while-down") is None  # a retry is taken afresh
    (tmp_path / "up").mkdir()
    with inbound_env(tmp_path / "up", kafka_bootstrap, topic) as ib:  # the broker is back: the retry lands
        assert ib.sender().batch([structured(i) for i in range(5)], "while-down").status_code == 200
        assert ib.topic_ids() == {f"clicks-0-{i}": 1 for i in range(5)}


@pytest.mark.parametrize("change, message", [
    ({"secret": "whsec_abc"}, "never goes in the spec"),
    ({"origins": []}, "at least one"),
    ({"previous_secret_env": "FLOWSUITE_OLD"}, "go together"),
    ({"secret_env": "lower_case"}, "environment variable"),
])
def test_spec_errors_name_the_file_and_field(tmp_path, change, message):
    import yaml

    from connectors.spec import SpecError, parse_spec_file

    spec = inbound_spec("t").model_dump(mode="json", exclude_none=True)
    spec["inbound"]["senders"][0].update(change)
    path = tmp_path / "ads_clicks.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError) as err:
        parse_spec_file(path)
    text = str(err.value)
    assert str(path) in text and "inbound.senders[0]" in text and message in text
    assert "whsec_abc" not in text


def test_inbound_needs_cloudevents_with_dedupe(tmp_path):
    import yaml

    from connectors.spec import SpecError, parse_spec_file

    spec = inbound_spec("t").model_dump(mode="json", exclude_none=True)
    spec["cloudevents"]["dedupe_on_id"] = False
    path = tmp_path / "ads_clicks.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="dedupe_on_id"):
        parse_spec_file(path)


def test_the_decoder_given_parsed_attributes_judges_as_it_does_from_the_headers():
    """The endpoint hands the product's decoder the attributes it parsed instead of headers to
    read back (the fast path of a batch): the rows and every quarantine reason are the same."""
    from connectors.formats.base import Batch
    from connectors.formats.cloudevents import CloudEventsDecoder

    spec = inbound_spec("t")
    base = {"specversion": "1.0", "source": SOURCE, "type": TYPE, "time": "2026-11-30T08:00:00Z"}
    cases = [
        ({**base, "id": "ok", "datacontenttype": "application/json"}, click(1)),
        ({**base, "id": "no-type-given"}, click(2)),  # no datacontenttype: JSON
        ({**base, "id": "xml", "datacontenttype": "application/xml"}, click(3)),
        ({**base, "id": "old", "specversion": "0.3"}, click(4)),
        ({k: v for k, v in base.items() if k != "source"} | {"id": "nosource"}, click(5)),
        ({**base, "id": "bad-kind"}, {**click(6), "kind": "view"}),
        ({**base, "id": "bad-time", "time": "yesterday"}, click(7)),
        ({**base, "id": "no-data"}, None),
    ]
    attributes = [a for a, _ in cases]
    values = [None if d is None else json.dumps(d).encode() for _, d in cases]
    headers = [[(f"ce_{k}", v.encode()) for k, v in a.items() if k != "datacontenttype"]
               + ([("content-type", a["datacontenttype"].encode())] if "datacontenttype" in a else []) for a in attributes]
    n = len(cases)
    batch = dict(partition=0, values=values, keys=[b"k%d" % i for i in range(n)], offsets=list(range(n)),
                 timestamps=[1_796_000_000_000] * n)
    from_headers = CloudEventsDecoder(spec).decode(Batch(**batch, headers=headers))
    parsed = CloudEventsDecoder(spec).decode(Batch(**batch), attributes)
    assert parsed.valid.equals(from_headers.valid)
    reasons = lambda d: dict(zip(d.invalid.column("_offset").to_pylist(), d.invalid.column("_error").to_pylist(), strict=True))  # noqa: E731
    assert reasons(parsed) == reasons(from_headers)
    assert parsed.valid.column("ce_id").to_pylist() == ["ok", "no-type-given"]
    assert set(reasons(parsed)) == {2, 3, 4, 5, 6, 7}  # xml, 0.3, no source, bad kind, bad time, no data (no deletes)


def test_concurrent_requests_share_the_webhook_id_log_commit(tmp_path):
    """Group commit: 40 requests recording at once are all in the log when `record` returns, in
    fewer transactions than requests (each one a durable SQLite commit)."""
    import threading

    from connectors.gateway.inbound.log import DeliveryLog
    from connectors.metastore import Metastore

    metastore = Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    log = DeliveryLog(metastore)
    start = threading.Barrier(40)
    returned: list[str] = []

    def one(i: int) -> None:
        start.wait()
        log.record("ads_clicks", ORG, f"msg-{i}", 200, i, {"accepted": i}, 3600)
        assert log.get("ads_clicks", ORG, f"msg-{i}").answer == {"accepted": i}  # committed when record returns
        returned.append(f"msg-{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert sorted(returned) == sorted(f"msg-{i}" for i in range(40))
        assert log.totals("ads_clicks") == {ORG: sum(range(40))}
        assert 1 <= log.commits < 40, log.commits
    finally:
        metastore.dispose()


def test_a_webhook_id_lookup_does_not_wait_for_a_writer(tmp_path):
    """`DeliveryLog.get` is a read: while another connection holds SQLite's write lock (a group
    commit mid-transaction, a claim renewal), it answers from the last commit at once instead of
    queuing for the lock as every BEGIN IMMEDIATE does."""
    from connectors.gateway.inbound.log import DeliveryLog
    from connectors.metastore import Metastore

    metastore = Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    log = DeliveryLog(metastore)
    log.record("ads_clicks", ORG, "msg-1", 200, 1, {"accepted": 1}, 3600)
    try:
        with holding_write_lock(metastore.engine, "DELETE FROM fs_inbound_deliveries WHERE webhook_id = 'nobody'"):
            started = time.monotonic()
            found = log.get("ads_clicks", ORG, "msg-1")
            took = time.monotonic() - started
            assert found is not None and found.answer == {"accepted": 1}
            assert took < 1.0, f"the lookup waited {took:.1f} s for the writer"
    finally:
        metastore.dispose()
