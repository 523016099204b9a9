"""Shared parts of the inbound tests: an inbound product on a fresh topic, the gateway app with
its inbound routes on uvicorn in a thread, a sender that signs as Standard Webhooks says, and
readers of what reached the topic and the lake."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from connectors.flows import land
from connectors.gateway import FlowService, GatewayStore
from connectors.gateway.inbound import InboundService, InboundSettings
from connectors.gateway.signing import webhook_headers
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec
from tests.support import read_messages
from tests.support.gateway import ApiServer, test_settings

ORG = "ads"
ORIGIN = "ads.flowsuite.example"
SOURCE = "/flowsuite/products/clicks"
TYPE = "com.flowsuite.clicks.event"
SECRET_ENV = "FLOWSUITE_INBOUND_ADS_SECRET"
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def inbound_spec(topic: str, name: str = "ads_clicks", senders: list[dict] | None = None, **inbound: Any) -> DataProductSpec:
    return DataProductSpec.model_validate({
        "name": name, "owner": "team:p001-analytics", "topic": topic, "format": "cloudevents", "key": "event_id",
        "fields": [
            {"name": "event_id", "type": "string", "required": True},
            {"name": "partner_id", "type": "string", "required": True, "pattern": "^p-[0-9]{3}$"},
            {"name": "kind", "type": "string", "required": True, "enum": ["impression", "click"]},
            {"name": "event_time", "type": "timestamp", "required": True},
        ],
        "event_time": {"field": "event_time"},
        "partitioning": {"start": "2026-11-01T00:00:00Z"},
        "cloudevents": {"dedupe_on_id": True},
        "inbound": {"senders": senders or [{"org": ORG, "secret_env": SECRET_ENV, "origins": [ORIGIN],
                                            "sources": [SOURCE]}],
                    "types": [TYPE], **inbound},
    })


def click(i: int, partner: str = "p-001") -> dict[str, Any]:
    return {"event_id": f"e{i}", "partner_id": partner, "kind": "click" if i % 3 else "impression",
            "event_time": (T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")}


def structured(i: int, data: dict[str, Any] | None = None, **attrs: Any) -> dict[str, Any]:
    event = {"specversion": "1.0", "id": f"clicks-0-{i}", "source": SOURCE, "type": TYPE,
             "time": (T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
             "datacontenttype": "application/json", "partitionkey": f"e{i}", "data": data or click(i)}
    event.update(attrs)
    return {k: v for k, v in event.items() if v is not None}


@dataclass
class Sender:
    """Signs and posts as an organisation would (its own client; retries are the test's)."""

    url: str
    secret: str | None
    origin: str | None = ORIGIN
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30, trust_env=False))

    def post(self, body: bytes, headers: dict[str, str], msg_id: str, timestamp: int | None = None,
             secrets_: list[str] | None = None, path: str = "/inbound/ads_clicks") -> httpx.Response:
        send = dict(headers)
        signing = secrets_ if secrets_ is not None else [self.secret]
        send.update(webhook_headers(signing, msg_id, body, timestamp))
        if self.origin:
            send["WebHook-Request-Origin"] = self.origin
        return self.client.post(self.url + path, content=body, headers=send)

    def batch(self, events: list[dict[str, Any]], msg_id: str, **kw: Any) -> httpx.Response:
        body = json.dumps(events, separators=(",", ":")).encode()
        return self.post(body, {"content-type": "application/cloudevents-batch+json"}, msg_id, **kw)

    def one(self, event: dict[str, Any], msg_id: str | None = None, **kw: Any) -> httpx.Response:
        body = json.dumps(event, separators=(",", ":")).encode()
        return self.post(body, {"content-type": "application/cloudevents+json"}, msg_id or event["id"], **kw)

    def binary(self, event: dict[str, Any], msg_id: str | None = None, **kw: Any) -> httpx.Response:
        headers = {f"ce-{k}": str(v) for k, v in event.items() if k not in ("data", "datacontenttype")}
        headers["content-type"] = event.get("datacontenttype", "application/json")
        body = json.dumps(event["data"]).encode()
        return self.post(body, headers, msg_id or event["id"], **kw)


class InboundServer(ApiServer):
    """The gateway app (Subscriptions API + inbound routes) on uvicorn in a thread."""

    def __init__(self, inbound: InboundService, service: FlowService):
        super().__init__(service, inbound=inbound)


@dataclass
class Inbound:
    spec: DataProductSpec
    service: InboundService
    server: InboundServer
    metastore: Metastore
    lake: Lake
    bootstrap: str
    secret: str

    def sender(self, **kw: Any) -> Sender:
        return Sender(self.server.url, kw.pop("secret", self.secret), **kw)

    def topic_ids(self) -> Counter:
        return topic_ce_ids(self.bootstrap, self.spec.topic)

    def land(self):
        return land(self.spec, lake=self.lake, metastore=self.metastore, bootstrap=self.bootstrap, idle_timeout_s=5)

    def lake_ids(self) -> Counter:
        return lake_ce_ids(self.lake, self.metastore, self.spec.name)


@contextlib.contextmanager
def inbound_env(tmp_path: Path, bootstrap: str, topic: str, spec: DataProductSpec | None = None,
                env: dict[str, str] | None = None, settings: InboundSettings | None = None) -> Iterator[Inbound]:
    spec = spec or inbound_spec(topic)
    secret = new_secret()
    metastore = Metastore(f"sqlite:///{tmp_path / 'metastore.db'}")
    inbound = InboundService([spec], env if env is not None else {SECRET_ENV: secret}, metastore, bootstrap,
                             settings=settings or InboundSettings(ack_timeout_s=10))
    service = FlowService(GatewayStore(metastore), [spec], test_settings(), bootstrap)
    server = InboundServer(inbound, service)
    try:
        yield Inbound(spec, inbound, server, metastore, Lake(str(tmp_path / "lake")), bootstrap, secret)
    finally:
        server.stop()
        inbound.close()
        metastore.dispose()


def topic_records(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every record of the topic, read from the start of each partition to its end (read_messages)."""
    return read_messages(bootstrap, topic, timeout=timeout)


def topic_ce_ids(bootstrap: str, topic: str) -> Counter:
    ids: Counter = Counter()
    for msg in topic_records(bootstrap, topic):
        ce = dict(msg.headers() or [])
        ids[ce["ce_id"].decode()] += 1
    return ids


def lake_ce_ids(lake: Lake, metastore: Metastore, product: str, kind: str = "landed") -> Counter:
    files = metastore.live_files(product, kinds=(kind,))
    if not files:
        return Counter()
    table = lake.read_tables([f.path for f in files], columns=["ce_id"] if kind == "landed" else ["_raw"])
    if kind == "landed":
        return Counter(table.column("ce_id").to_pylist())
    return Counter(json.loads(raw)["id"] for raw in table.column("_raw").to_pylist())
