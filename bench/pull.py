"""Pull delivery against push, on one subscription, in the same run.

    python -m bench.pull [--events 5000] [--batch 1000] [--rounds 1]

On an embedded Tansu broker and a SQLite metastore, with the gateway's API on uvicorn in this
process: `--events` clicks of one partner on one partition; then

1. **pull**: one puller (httpx) loops `POST :receive?maxEvents=--batch` and `:acknowledge` of
   every token it got, until every event is acknowledged — events/s received + acknowledged;
2. **push batched**: the current push engine (connectors/gateway/gateway.py) delivering the same
   events to a loopback receiver, batched mode with `maxbatch` --batch — events/s until the
   receiver holds them all.

Writes bench/results/pull.json. Everything shares the machine's cores: quote the figures with the
load they were measured under.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import uvicorn
from confluent_kafka import Producer

from connectors.gateway import FlowService, Gateway, GatewaySettings, GatewayStore
from connectors.gateway.api import create_app
from connectors.kafka import ensure_topic
from connectors.metastore import Metastore
from connectors.settings import REPO_ROOT
from connectors.spec import DataProductSpec
from orchestration.services.broker import running_broker

RESULTS = REPO_ROOT / "bench" / "results"
OWNER, ORG, SOURCE = "team:ads", "p-001", "/flowsuite/products/clicks"


def spec_for(topic: str) -> DataProductSpec:
    return DataProductSpec.model_validate({
        "name": "clicks", "owner": OWNER, "topic": topic, "key": "event_id",
        "fields": [{"name": "event_id", "type": "string", "required": True},
                   {"name": "partner_id", "type": "string", "required": True},
                   {"name": "event_time", "type": "timestamp", "required": True}],
        "event_time": {"field": "event_time"},
        "partitioning": {"start": "2026-11-01T00:00:00Z"},
        "flow": {"enabled": True, "attributes": {"partner_id": "partnerid"}, "auto_approve": [ORG],
                 "require": [{"exact": {"partnerid": "{org}"}}]},
    })


def produce(bootstrap: str, topic: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        rec = {"event_id": f"e{i}", "partner_id": ORG, "event_time": f"2026-12-01T10:{(i // 60) % 60:02d}:{i % 60:02d}Z"}
        producer.produce(topic, key=f"e{i}".encode(), value=json.dumps(rec).encode(), partition=0)
    assert producer.flush(30) == 0


class Counter:
    """A loopback webhook receiver that consents and counts the events of batched requests."""

    def __init__(self):
        self.events = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, headers: dict[str, str]) -> None:
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_OPTIONS(self):
                self._answer({"WebHook-Allowed-Origin": "*"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer.lock:
                    outer.events += len(json.loads(body))
                self._answer({})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(service: FlowService) -> tuple[uvicorn.Server, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def pull_round(url: str, token: str, n: int, batch: int) -> dict:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60, trust_env=False) as c:
        sub = c.post("/subscriptions", json={"source": SOURCE, "protocol": "HTTP",
                                             "filters": [{"exact": {"partnerid": ORG}}],
                                             "config": {"delivery": "pull", "startfrom": "earliest"}}).json()
        done, calls, started = 0, 0, time.perf_counter()
        while done < n:
            value = c.post(f"/subscriptions/{sub['id']}:receive", params={"maxEvents": batch, "maxWaitTime": 5}).json()["value"]
            calls += 1
            if not value:
                continue
            tokens = [v["brokerProperties"]["lockToken"] for v in value]
            resp = c.post(f"/subscriptions/{sub['id']}:acknowledge", json={"lockTokens": tokens})
            assert resp.status_code == 200 and len(resp.json()["succeededLockTokens"]) == len(tokens), resp.text
            done += len(tokens)
        took = time.perf_counter() - started
    return {"events": done, "seconds": round(took, 3), "events_per_s": round(done / took, 1), "receives": calls}


def push_round(url: str, token: str, store: GatewayStore, spec, bootstrap: str, settings, n: int, batch: int) -> dict:
    counter = Counter()
    gateway = Gateway(store, [spec], bootstrap, settings)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60, trust_env=False) as c:
            resp = c.post("/subscriptions", json={"source": SOURCE, "protocol": "HTTP", "sink": counter.url,
                                                  "filters": [{"exact": {"partnerid": ORG}}],
                                                  "config": {"mode": "batched", "maxbatch": batch, "startfrom": "earliest"}})
            assert resp.status_code == 201, resp.text
        started = time.perf_counter()
        gateway.start()
        deadline = time.monotonic() + 600
        while counter.events < n and time.monotonic() < deadline:
            time.sleep(0.01)
        took = time.perf_counter() - started
    finally:
        gateway.stop()
        counter.stop()
    return {"events": counter.events, "seconds": round(took, 3), "events_per_s": round(counter.events / took, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    settings = GatewaySettings(allow_http=True, allow_sinks=(ipaddress.ip_network("127.0.0.1/32"),), poll_interval_s=0.1)
    rounds = []
    with running_broker() as broker, tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            topic = f"bench.pull.{r}.{os.getpid()}"
            ensure_topic(broker.bootstrap, topic, 1)
            produce(broker.bootstrap, topic, args.events)
            spec = spec_for(topic)
            metastore = Metastore(f"sqlite:///{Path(tmp) / f'm{r}.db'}")
            store = GatewayStore(metastore)
            service = FlowService(store, [spec], settings, broker.bootstrap)
            server, url = serve(service)
            token = store.create_token(ORG)
            try:
                order = ("pull", "push") if r % 2 == 0 else ("push", "pull")
                got = {}
                for what in order:
                    got[what] = (pull_round(url, token, args.events, args.batch) if what == "pull" else
                                 push_round(url, token, store, spec, broker.bootstrap, settings, args.events, args.batch))
                got["ratio_pull_to_push"] = round(got["pull"]["events_per_s"] / got["push"]["events_per_s"], 3)
                rounds.append(got)
                print(json.dumps(got))
            finally:
                server.should_exit = True
                metastore.dispose()
    out = {"events": args.events, "batch": args.batch, "rounds": rounds, "machine": platform.platform(),
           "cpus": os.cpu_count(), "load_average": os.getloadavg(), "metastore": "sqlite"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pull.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'pull.json'}")


if __name__ == "__main__":
    main()
