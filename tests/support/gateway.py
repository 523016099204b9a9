"""Shared parts of the gateway tests: a real HTTP receiver on loopback, a flow-enabled product
on a fresh topic, the API on uvicorn in a thread, and a guard that fails on any connection to
an address that is not loopback."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import uvicorn
from confluent_kafka import Producer

from connectors.flows import land
from connectors.formats import Batch, decoder_for
from connectors.gateway import FlowService, GatewaySettings, GatewayStore
from connectors.gateway.api import create_app
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec
from tests.support import read_messages, wait_for
from tests.support.tansu import S3Broker, s3_broker

OWNER = "team:ads"
SOURCE = "/flowsuite/products/clicks"
TYPE = "com.flowsuite.clicks.event"
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def clicks_flow_spec(topic: str, **flow: Any) -> DataProductSpec:
    return DataProductSpec.model_validate({
        "name": "clicks", "owner": OWNER, "topic": topic, "key": "event_id",
        "fields": [
            {"name": "event_id", "type": "string", "required": True},
            {"name": "partner_id", "type": "string", "required": True},
            {"name": "kind", "type": "string", "required": True},
            {"name": "event_time", "type": "timestamp", "required": True},
        ],
        "event_time": {"field": "event_time"},
        "partitioning": {"start": "2026-11-01T00:00:00Z"},
        "flow": {"enabled": True, "type": TYPE, "attributes": {"partner_id": "partnerid", "kind": "kind"},
                 "require": [{"exact": {"partnerid": "{org}"}}], **flow},
    })


def produce_clicks(bootstrap: str, topic: str, n: int, partners: tuple[str, ...] = ("p-001", "p-002"),
                   start: int = 0, when: Callable[[int], datetime] | None = None, partition: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    for i in range(start, start + n):
        ts = (when(i) if when else T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
        rec = {"event_id": f"e{i}", "partner_id": partners[i % len(partners)],
               "kind": "click" if i % 3 else "impression", "event_time": ts}
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(topic, key=f"e{i}".encode(), value=json.dumps(rec).encode(), **kwargs)
    assert producer.flush(30) == 0


def produce_history(bootstrap: str, topic: str, n: int, partitions: int = 2, seed: int = 7, chunk: int = 10) -> None:
    """n clicks over three hours (event times a little out of order, so one partition's files of
    neighbouring hours interleave), about 1 in 40 invalid (quarantined by the landing), flushed
    every `chunk` records per partition so batch boundaries fall on multiples of it."""
    rng = random.Random(seed)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        p = i % partitions
        when = T0 + timedelta(seconds=i * 10_800 / n + rng.uniform(-300, 300))
        rec = {"event_id": f"e{i}", "partner_id": f"p-{i % 5:03d}", "kind": rng.choice(["click", "impression"]),
               "event_time": when.isoformat().replace("+00:00", "Z")}
        if rng.random() < 0.025:
            del rec["partner_id"]  # required: quarantined
        producer.produce(topic, key=f"e{i}".encode(), value=json.dumps(rec).encode(), partition=p)
        if (i // partitions) % chunk == chunk - 1 and p == partitions - 1:
            assert producer.flush(30) == 0
    assert producer.flush(30) == 0


def decode_from_kafka(bootstrap: str, spec, partition: int, start: int = 0) -> pa.Table:
    """The landing decoder's `valid` table of everything in the partition from `start` on."""
    msgs = [m for m in read_messages(bootstrap, spec.topic, partition + 1, start=start) if m.partition() == partition]
    return decoder_for(spec).decode(Batch(
        partition, [m.value() for m in msgs], [m.key() for m in msgs], [m.offset() for m in msgs],
        [m.timestamp()[1] for m in msgs],
    )).valid


def land_all(spec, lake, metastore, bootstrap: str, runs_of: int, partitions: list[int] | None = None) -> None:
    """Land the topic in runs of `runs_of` records until it is drained (several files per hour)."""
    for run in range(50):
        result = land(spec, lake=lake, metastore=metastore, bootstrap=bootstrap, run_id=f"run-{run}",
                      max_records=runs_of, idle_timeout_s=2, batch_size=runs_of, partitions=partitions)
        if result.consumed == 0:
            return
    raise AssertionError("the landing did not drain the topic")


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0  # what the receiver answered


@dataclass
class Receiver:
    """A webhook receiver: consents to the handshake (or not), answers deliveries with the
    status `respond(request)` gives, and records everything it got."""

    consent: str | None = "*"  # WebHook-Allowed-Origin to answer; None: no consent
    rate: str | None = None
    respond: Callable[[Received], tuple[int, dict[str, str]]] = lambda r: (200, {})
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def deliveries(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.method in ("POST", "PUT")]

    def handshakes(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.method == "OPTIONS"]

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _record(self) -> Received:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                with outer.lock:
                    outer.requests.append(rec)
                return rec

            def _answer(self, status: int, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_OPTIONS(self):
                self._record()
                headers = {"Allow": "POST"}
                if outer.consent is not None:
                    headers["WebHook-Allowed-Origin"] = outer.consent
                    if outer.rate:
                        headers["WebHook-Allowed-Rate"] = outer.rate
                self._answer(200, headers)

            def do_POST(self):
                rec = self._record()
                status, headers = outer.respond(rec)
                rec.status = status
                self._answer(status, headers)

            do_PUT = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()



@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A started Receiver, stopped after the test (offered to the gateway tests by conftest.py)."""
    r = Receiver().start()
    yield r
    r.stop()

@pytest.fixture(scope="module")
def broker(s3_server) -> Iterator[S3Broker]:
    """A Tansu broker on S3 storage whose topics can lose their early offsets (tests/support/tansu.py);
    one per test module: a truncation restarts it, so read `broker.bootstrap` after one."""
    with s3_broker(s3_server) as b:
        yield b


def test_settings(**kw: Any) -> GatewaySettings:
    base = dict(allow_http=True, allow_sinks=(ipaddress.ip_network("127.0.0.1/32"),), lease_s=2.0,
                retry_base_s=0.05, retry_cap_s=0.5, poll_interval_s=0.2, request_timeout_s=5.0)
    base.update(kw)
    return GatewaySettings(**base)


test_settings.__test__ = False  # a helper, not a test


class ApiServer:
    """The Starlette app on uvicorn in a thread, on a free loopback port."""

    def __init__(self, service: FlowService, **app_kwargs: Any):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        config = uvicorn.Config(create_app(service, **app_kwargs), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 10, interval=0.02, what="the gateway app to listen")
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, trust_env=False)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Flow:
    """Everything one test needs: store, service, API, tokens."""

    spec: DataProductSpec
    store: GatewayStore
    service: FlowService
    api: ApiServer
    settings: GatewaySettings
    bootstrap: str
    owner_token: str
    tokens: dict[str, str]

    def client(self, org: str) -> httpx.Client:
        return self.api.client(self.owner_token if org == OWNER else self.tokens[org])

    def subscribe(self, org: str, sink: str, **extra: Any) -> dict[str, Any]:
        body = {"source": SOURCE, "protocol": "HTTP", "sink": sink,
                "filters": [{"exact": {"partnerid": org}}], **extra}
        with self.client(org) as c:
            resp = c.post("/subscriptions", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def approve(self, sub_id: str) -> None:
        with self.client(OWNER) as c:
            resp = c.post(f"/subscriptions/{sub_id}/approve")
        assert resp.status_code == 200, resp.text


@contextlib.contextmanager
def flow_env(tmp_path: Path, bootstrap: str, topic: str, settings: GatewaySettings | None = None, **flow: Any) -> Iterator[Flow]:
    spec = clicks_flow_spec(topic, **flow)
    metastore = Metastore(f"sqlite:///{tmp_path / 'metastore.db'}")
    store = GatewayStore(metastore)
    settings = settings or test_settings()
    service = FlowService(store, [spec], settings, bootstrap)
    api = ApiServer(service)
    tokens = {org: store.create_token(org) for org in ("p-001", "p-002")}
    try:
        yield Flow(spec, store, service, api, settings, bootstrap, store.create_token(OWNER), tokens)
    finally:
        api.stop()
        metastore.dispose()


@contextlib.contextmanager
def loopback_only() -> Iterator[list[tuple]]:
    """Fail any TCP/UDP connection to a non-loopback address made in this process, and record
    every attempt: the proof that a refusal happened before any packet left."""
    attempts: list[tuple] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(address) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None:
            attempts.append(address)
            try:
                ip = ipaddress.ip_address(host.split("%")[0])
            except ValueError:
                raise AssertionError(f"connection by name {host!r}") from None
            if not ip.is_loopback:
                raise AssertionError(f"a connection to {address} was attempted")

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex
