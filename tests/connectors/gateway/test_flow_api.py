"""The Subscriptions API over real HTTP (uvicorn on loopback): authentication, validation with
clear 4xx answers, the handshake, the lifecycle, discovery and the owner's decisions."""

from __future__ import annotations

import pytest

from tests.support.gateway import (
    OWNER,
    SOURCE,
    TYPE,
    Receiver,
    flow_env,
    loopback_only,
)


@pytest.fixture
def flow(tmp_path, kafka_bootstrap, make_topic):
    with flow_env(tmp_path, kafka_bootstrap, make_topic(partitions=2)) as f:
        yield f


def body(sink: str, partner: str = "p-001", **extra):
    return {"source": SOURCE, "protocol": "HTTP", "sink": sink, "filters": [{"exact": {"partnerid": partner}}], **extra}


def test_unauthenticated_and_bad_tokens_are_401(flow):
    for token in (None, "nonsense", flow.tokens["p-001"][:-2] + "xx", "fst_" + "0" * 32 + "_abc"):
        with flow.api.client(token) as c:
            for method, path in (("GET", "/subscriptions"), ("GET", "/products"), ("POST", "/subscriptions")):
                resp = c.request(method, path, json={})
                assert resp.status_code == 401, (token, path)
                assert resp.headers["www-authenticate"] == "Bearer"
    with flow.api.client(None) as c:  # OPTIONS: the features, for anyone (subscriptions-openapi)
        assert c.options("/subscriptions").headers["allow"] == "GET,POST,OPTIONS"
        assert c.options("/subscriptions/x").headers["allow"] == "GET,PUT,DELETE,OPTIONS"


@pytest.mark.parametrize(
    "payload, status, words",
    [
        ({"source": SOURCE, "sink": "http://127.0.0.1:9/h"}, 400, "protocol is required"),
        ({"protocol": "AMQP", "source": SOURCE, "sink": "amqp://x"}, 400, "'AMQP' is not supported"),
        ({"protocol": "HTTP", "sink": "http://127.0.0.1:9/h"}, 400, "source is required"),
        ({"protocol": "HTTP", "source": "/nope", "sink": "http://127.0.0.1:9/h"}, 400, "GET /products"),
        ({"protocol": "HTTP", "source": SOURCE}, 400, "sink is required"),
        ({"protocol": "HTTP", "source": SOURCE, "sink": "http://127.0.0.1:9/h", "filters": [{"sql": "true"}]}, 400, "'sql' is not supported"),
        ({"protocol": "HTTP", "source": SOURCE, "sink": "http://127.0.0.1:9/h", "filters": [{"exact": {"partnerid": "p-002"}}]}, 400, "requires every subscription"),
        ({"protocol": "HTTP", "source": SOURCE, "sink": "http://10.0.0.1/h", "filters": [{"exact": {"partnerid": "p-001"}}]}, 400, "private"),
        ({"protocol": "HTTP", "source": SOURCE, "sink": "http://169.254.169.254/", "filters": [{"exact": {"partnerid": "p-001"}}]}, 400, "metadata"),
        ({**body("http://127.0.0.1:9/h"), "config": {"bogus": 1}}, 400, "config keys not supported"),
        ({**body("http://127.0.0.1:9/h"), "config": {"startfrom": "yesterday"}}, 400, "startfrom"),
        ({**body("http://127.0.0.1:9/h"), "config": {"mode": "carrier-pigeon"}}, 400, "config.mode"),
        ({**body("http://127.0.0.1:9/h"), "protocolsettings": {"headers": {"ce-id": "x"}}}, 400, "may not be set"),
        ({**body("http://127.0.0.1:9/h"), "protocolsettings": {"method": "DELETE"}}, 400, "POST or PUT"),
        ({**body("http://127.0.0.1:9/h"), "types": ["com.other"]}, 400, "is not emitted"),
        ({**body("http://127.0.0.1:9/h"), "sinkcredential": {"credentialtype": "PLAIN"}}, 400, "sinkcredential"),
        ({**body("http://127.0.0.1:9/h"), "color": "red"}, 400, "unknown subscription properties"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(flow, payload, status, words):
    with loopback_only(), flow.client("p-001") as c:
        resp = c.post("/subscriptions", json=payload)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["error"]


def test_body_limits_and_content_types(flow):
    with flow.client("p-001") as c:
        big = c.post("/subscriptions", content=b"{" + b" " * 70_000 + b"}", headers={"content-type": "application/json"})
        assert big.status_code == 413
        assert c.post("/subscriptions", content=b"source=x", headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 415
        broken = c.post("/subscriptions", content=b'{"protocol": ', headers={"content-type": "application/json"})
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]


def test_handshake_refusal_fails_the_subscription(flow):
    silent = Receiver(consent=None).start()
    wrong = Receiver(consent="someone-else.example").start()
    try:
        with flow.client("p-001") as c:
            for r in (silent, wrong):
                resp = c.post("/subscriptions", json=body(r.url))
                assert resp.status_code == 400 and "handshake refused" in resp.json()["error"]
                assert len(r.handshakes()) == 1
                assert r.handshakes()[0].headers["webhook-request-origin"] == flow.settings.origin
                assert r.deliveries() == []
            states = [s["state"] for s in c.get("/subscriptions").json()]
        assert states == ["failed", "failed"]
    finally:
        silent.stop()
        wrong.stop()


def test_lifecycle_with_owner_decisions(flow, receiver):
    receiver.rate = "120"
    created = flow.subscribe("p-001", receiver.url)
    sub_id = created["id"]
    assert created["state"] == "pending_approval"
    assert created["webhooksecret"].startswith("whsec_")
    assert created["status"]["ratelimit"] == 120
    assert receiver.handshakes()[0].headers["webhook-request-origin"] == flow.settings.origin
    with flow.client("p-001") as c:
        got = c.get(f"/subscriptions/{sub_id}")
        assert got.status_code == 200 and "webhooksecret" not in got.json() and got.json()["sink"] == receiver.url
        assert created["webhooksecret"] not in got.text
        # the subscriber cannot approve itself
        assert c.post(f"/subscriptions/{sub_id}/approve").status_code == 403
    with flow.client("p-002") as c:  # someone else's subscription does not exist for p-002
        assert c.get(f"/subscriptions/{sub_id}").status_code == 404
        assert c.put(f"/subscriptions/{sub_id}", json=body(receiver.url, "p-002")).status_code == 404
        assert c.delete(f"/subscriptions/{sub_id}").status_code == 404
        assert c.post(f"/subscriptions/{sub_id}/approve").status_code == 404
        assert c.get("/subscriptions").json() == []
    with flow.client(OWNER) as c:
        assert [s["id"] for s in c.get("/subscriptions").json()] == [sub_id]  # the owner sees it
        assert c.post(f"/subscriptions/{sub_id}/resume").status_code == 409  # not paused
        assert c.post(f"/subscriptions/{sub_id}/approve").json()["state"] == "active"
        assert c.post(f"/subscriptions/{sub_id}/pause").json()["state"] == "paused"
        assert c.post(f"/subscriptions/{sub_id}/resume").json()["state"] == "active"
        assert c.post(f"/subscriptions/{sub_id}/dance").status_code == 404
        assert c.delete(f"/subscriptions/{sub_id}").status_code == 403  # the owner rejects instead
    with flow.client("p-001") as c:
        changed = c.put(f"/subscriptions/{sub_id}", json=body(receiver.url, types=[TYPE]))
        assert changed.status_code == 200 and changed.json()["types"] == [TYPE]
        assert c.put(f"/subscriptions/{sub_id}", json=body(receiver.url, "p-002")).status_code == 400
        rotated = c.post(f"/subscriptions/{sub_id}/secret?grace=60")
        assert rotated.status_code == 200 and rotated.json()["webhooksecret"] != created["webhooksecret"]
        assert c.delete(f"/subscriptions/{sub_id}").json()["state"] == "deleted"
        assert c.get(f"/subscriptions/{sub_id}").status_code == 404
    second = flow.subscribe("p-001", receiver.url)
    with flow.client(OWNER) as c:
        assert c.post(f"/subscriptions/{second['id']}/reject").json()["state"] == "rejected"
        assert c.post(f"/subscriptions/{second['id']}/approve").status_code == 409


def test_auto_approved_orgs_start_active(tmp_path, kafka_bootstrap, make_topic, receiver):
    with flow_env(tmp_path, kafka_bootstrap, make_topic(partitions=1), auto_approve=["p-001"]) as flow:
        assert flow.subscribe("p-001", receiver.url)["state"] == "active"
        assert flow.subscribe("p-002", receiver.url)["state"] == "pending_approval"


def test_discovery_lists_subscribable_products(flow):
    with flow.client("p-001") as c:
        doc = c.get("/products").json()
    clicks = doc["endpoints"]["clicks"]
    assert clicks["usage"] == ["subscriber"] and clicks["owner"] == OWNER
    assert clicks["envelope"] == "CloudEvents/1.0" and clicks["envelopeoptions"]["mode"] == "binary"
    assert clicks["config"]["endpoints"][0]["uri"].endswith("/subscriptions")
    message = clicks["messages"][TYPE]
    assert message["envelopemetadata"]["source"] == SOURCE
    assert message["dataschema"]["properties"]["partner_id"] == {"type": "string"}
    assert clicks["requiredfilters"] == [{"exact": {"partnerid": "p-001"}}]


# --- typed requests: config values as strings or typed, every 400 naming its field ----------


@pytest.mark.parametrize("config", [
    {"mode": "batched", "ordered": "false", "maxbatch": "50", "maxinflight": "4", "ttl": "6h", "rate": "120",
     "delivery": "push", "startfrom": "latest"},
    {"mode": "batched", "ordered": False, "maxbatch": 50, "maxinflight": 4, "ttl": 21600, "rate": 120},
])
def test_config_values_may_be_strings_and_the_subscription_exposes_them_typed(flow, receiver, config):
    created = flow.subscribe("p-001", receiver.url, config=config)
    assert created["config"] == config  # shown as the subscriber wrote it
    options = flow.store.get(created["id"]).options
    assert (options.mode, options.ordered, options.events_per_request, options.requests_in_flight) == ("batched", False, 50, 4)
    assert options.ttl_s(default_s=1.0) == 21_600 and options.rate == 120 and options.delivery == "push"
    defaults = flow.store.get(flow.subscribe("p-001", receiver.url)["id"]).options
    assert (defaults.mode, defaults.ordered, defaults.events_per_request, defaults.requests_in_flight) == ("binary", True, 1, 1)
    assert defaults.ttl_s(default_s=99.0) == 99.0 and defaults.rate is None and defaults.startfrom == "latest"


@pytest.mark.parametrize("extra, words", [
    ({"config": {"maxbatch": "0"}}, "config.maxbatch must be an integer from 1 to 1000"),
    ({"config": {"maxbatch": True}}, "config.maxbatch must be an integer"),
    ({"config": {"maxbatch": "2.5"}}, "config.maxbatch must be an integer"),
    ({"config": {"maxinflight": 65}}, "config.maxinflight must be an integer from 1 to 64"),
    ({"config": {"ordered": "yes"}}, "config.ordered must be true or false"),
    ({"config": {"rate": "-5"}}, "config.rate must be an integer from 1 to 1000000 (requests per minute)"),
    ({"config": {"ttl": "forever"}}, "config.ttl: expected a duration"),
    ({"config": {"delivery": "pull"}}, "config.delivery: pull is not available yet"),
    ({"config": {"delivery": "email"}}, "config.delivery must be push"),
    ({"config": [1]}, "config must be an object"),
    ({"config": {"startfrom": {"0": "x"}}}, "config.startfrom: expected {partition: offset}"),
    ({"types": "com.flowsuite.clicks.event"}, "types must be an array of non-empty strings"),
    ({"protocolsettings": {"headers": {"x-a": 1}}}, "protocolsettings.headers.x-a: a header value is a single-line string"),
    ({"filters": [{"exact": {"partnerid": "p-001"}}, {"prefix": {}}]}, "filters[1].prefix: expected a non-empty map"),
])
def test_every_400_names_the_field(flow, extra, words):
    with loopback_only(), flow.client("p-001") as c:
        resp = c.post("/subscriptions", json={**body("http://127.0.0.1:9/h"), **extra})
    assert resp.status_code == 400, resp.text
    assert words in resp.json()["error"]


def test_the_owners_rate_cap_caps_a_subscribers_rate(tmp_path, kafka_bootstrap, make_topic, receiver):
    with flow_env(tmp_path, kafka_bootstrap, make_topic(partitions=1), max_rate=600) as flow:
        capped = flow.subscribe("p-001", receiver.url, config={"rate": "900"})
        assert capped["status"]["ratelimit"] == 600
        assert capped["status"]["ratelimits"] == {"receiver": None, "subscriber": 900, "owner": 600}
        assert capped["status"]["notes"] == ["config.rate 900 is above the owner's cap (flow.max_rate 600 requests "
                                             "per minute): delivering at most 600"]
        assert flow.subscribe("p-001", receiver.url, config={"rate": 300})["status"]["ratelimit"] == 300
        assert flow.subscribe("p-001", receiver.url)["status"]["ratelimit"] == 600
        receiver.rate = "120"  # WebHook-Allowed-Rate: the receiver's word counts too
        slow = flow.subscribe("p-001", receiver.url, config={"rate": 900})
        assert slow["status"]["ratelimit"] == 120 and slow["status"]["notes"]


# --- the partner's defects: a start in the future, read-only fields in a PUT -----------------


FUTURE = "2999-01-01T00:00:00Z"


def test_a_start_in_the_future_is_refused_everywhere(flow, receiver):
    with flow.client("p-001") as c:
        resp = c.post("/subscriptions", json=body(receiver.url, config={"startfrom": FUTURE}))
        assert resp.status_code == 400
        assert "config.startfrom: '2999-01-01T00:00:00Z' is in the future" in resp.json()["error"]
        assert 'use "latest"' in resp.json()["error"]
        created = flow.subscribe("p-001", receiver.url, config={"startfrom": "2026-01-01T00:00:00Z"})  # a past time: fine
        before = c.get(f"/subscriptions/{created['id']}").json()
        replay = c.post(f"/subscriptions/{created['id']}/replay", json={"startfrom": FUTURE})
        assert replay.status_code == 400 and replay.json()["error"].startswith("startfrom: '2999-01-01T00:00:00Z' is in the future")
        put = c.put(f"/subscriptions/{created['id']}", json=body(receiver.url, config={"startfrom": FUTURE}))
        assert put.status_code == 400 and "config.startfrom" in put.json()["error"] and "latest" in put.json()["error"]
        assert c.get(f"/subscriptions/{created['id']}").json() == before  # nothing moved
        bad = c.post(f"/subscriptions/{created['id']}/replay", json={"startfrom": "latest", "force": True})
        assert bad.status_code == 400 and '{"startfrom":' in bad.json()["error"]
        assert c.post(f"/subscriptions/{created['id']}/replay", json={"startfrom": "latest"}).status_code == 200


def test_a_put_may_repeat_read_only_fields_but_not_change_them(flow, receiver):
    created = flow.subscribe("p-001", receiver.url)
    sub_id = created["id"]
    with flow.client("p-001") as c:
        current = c.get(f"/subscriptions/{sub_id}").json()
        assert current["state"] == "pending_approval" and "status" in current
        round_trip = c.put(f"/subscriptions/{sub_id}", json={**current, "types": [TYPE]})  # GET → PUT, one change
        assert round_trip.status_code == 200, round_trip.text
        assert round_trip.json()["types"] == [TYPE] and round_trip.json()["state"] == "pending_approval"
        current = round_trip.json()
        for field, value, words in [
            ("state", "active", "state cannot be changed with PUT (it is 'pending_approval', the body says 'active'): "
                                "the owner approves"),
            ("org", "p-002", "org cannot be changed with PUT (it is 'p-001'"),
            ("id", "another", "id cannot be changed with PUT"),
            ("product", "orders", "product cannot be changed with PUT"),
            ("reason", "because", "reason cannot be changed with PUT"),
            ("status", {"positions": {"0": 5}, "mood": "happy"}, "status cannot be set"),
            ("status", "fine", "status cannot be set"),
        ]:
            resp = c.put(f"/subscriptions/{sub_id}", json={**current, field: value})
            assert resp.status_code == 400, (field, resp.text)
            assert words in resp.json()["error"], (field, resp.json()["error"])
        assert c.get(f"/subscriptions/{sub_id}").json() == current  # nothing changed by a refused PUT


def test_a_new_subscription_may_name_its_own_org_but_nothing_else_the_gateway_sets(flow, receiver):
    with flow.client("p-001") as c:
        for field, value, words in [("state", "active", "state is set by the gateway"),
                                    ("id", "mine", "id is set by the gateway"),
                                    ("org", "p-002", "org is set by the gateway"),
                                    ("product", "orders", "product 'orders' does not match source")]:
            resp = c.post("/subscriptions", json={**body(receiver.url), field: value})
            assert resp.status_code == 400 and words in resp.json()["error"], (field, resp.text)
        ok = c.post("/subscriptions", json={**body(receiver.url), "org": "p-001", "product": "clicks", "state": None})
        assert ok.status_code == 201 and ok.json()["state"] == "pending_approval", ok.text
