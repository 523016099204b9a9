"""The Subscriptions API over real HTTP (uvicorn on loopback): authentication, validation with
clear 4xx answers, the handshake, the lifecycle, discovery and the owner's decisions."""

from __future__ import annotations

import pytest

from tests.connectors.gateway.flow_support import (
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
