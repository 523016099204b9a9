"""The flow gateway: push latency, throughput against a bare consumer, and 50 subscribers.

    python -m bench.flow [--seconds 10] [--events 40000]

On an embedded Tansu broker, with the gateway running as `flowsuite flow serve` in its own
process and the receivers (a small ASGI app on uvicorn, one path per subscriber) in another:

1. push latency produce → receiver (p50/p95/p99) at 1,000 events/s for `--seconds`, with 1
   subscriber (binary mode: one request per event) and 10 subscribers (batched mode);
   goal p99 <= 250 ms;
2. events/s to one subscriber from the start of a topic of `--events` records, binary and
   batched, against a bare confluent-kafka consumer reading the same topic in the same run;
   goal batched >= 0.5 of the bare consumer;
3. 50 subscribers at once (batched) on the same topic: total events/s and the gateway's peak RSS;
4. failover: two gateways share two subscriptions (one claim each) while 500 events/s flow; one
   is SIGKILLed; the figure is the longest pause in deliveries to any subscriber around the kill
   (an upper bound of the time from the SIGKILL to the survivor's first delivery); goal <= 3 s.

`--only latency,throughput,many,failover` runs a subset (quick checks while developing), written to
bench/results/flow.partial.json so the full run's figures in flow.json stay one run.

Writes bench/results/flow.json. Figures depend on the machine's load: say so when quoting.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from connectors.gateway import FlowService, GatewaySettings, GatewayStore
from connectors.kafka import ensure_topic
from connectors.metastore import Metastore
from connectors.settings import REPO_ROOT as ROOT
from connectors.spec import DataProductSpec
from orchestration.services.broker import running_broker

RESULTS = ROOT / "bench" / "results"

ORG = "bench"


# --- the receivers' process ----------------------------------------------------------------

def receiver_app():
    stats: dict[str, dict] = {}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        now = time.time()
        headers = [(b"content-length", b"0")]
        status = 204
        if method == "OPTIONS":
            headers += [(b"webhook-allowed-origin", b"*"), (b"webhook-allowed-rate", b"*")]
            status = 200
        elif method == "GET":
            data = json.dumps(stats).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})
            return
        elif method == "DELETE":
            stats.clear()
        else:
            ctype = dict(scope["headers"]).get(b"content-type", b"")
            try:
                parsed = json.loads(body)
            except ValueError:  # a body cut short: its sender was SIGKILLed mid-request (the failover row)
                await send({"type": "http.response.start", "status": 400, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
            sent = [e["data"]["t"] for e in parsed] if ctype.startswith(b"application/cloudevents-batch") else [parsed["t"]]
            s = stats.setdefault(path, {"count": 0, "lat": [], "first": now, "last": now, "first_n": len(sent)})
            s["count"] += len(sent)
            s["last"] = now
            s["lat"] += [now - t for t in sent if t > 0]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return app


def run_receivers(port: int) -> None:
    import uvicorn

    uvicorn.run(receiver_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- helpers -------------------------------------------------------------------------------

def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def spec_for(topic: str) -> DataProductSpec:
    return DataProductSpec.model_validate({
        "name": "clicks", "owner": "team:ads", "topic": topic, "key": "event_id",
        "fields": [{"name": "event_id", "type": "string", "required": True},
                   {"name": "partner_id", "type": "string", "required": True},
                   {"name": "event_time", "type": "timestamp", "required": True}],
        "event_time": {"field": "event_time"}, "partitioning": {"start": "2026-11-01T00:00:00Z"},
        "flow": {"enabled": True, "attributes": {"partner_id": "partnerid"}, "auto_approve": [ORG]},
    })


def record(i: int, stamp: bool) -> bytes:
    t = time.time() if stamp else 0
    return (f'{{"event_id":"e{i}","partner_id":"p-{i % 250:03d}","event_time":"2026-11-30T10:00:00Z","t":{t}}}').encode()


def produce_all(bootstrap: str, topic: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        while True:
            try:
                p.produce(topic, key=f"e{i}".encode(), value=record(i, False))
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def produce_paced(bootstrap: str, topic: str, rate: int, seconds: float) -> int:
    """Produce `rate` records a second for `seconds`; returns how many the broker acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    acked = []
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate)
        while n < due:
            p.produce(topic, key=f"l{n}".encode(), value=record(n, True),
                      on_delivery=lambda err, _m: acked.append(1) if err is None else None)
            n += 1
        p.poll(0)
        time.sleep(0.001)
    if p.flush(120):
        raise RuntimeError("the broker did not acknowledge every record within 120 s")
    return len(acked)


def bare_consumer(bootstrap: str, topic: str, partitions: int) -> float:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-bare", "enable.partition.eof": True,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    eof, n, start = set(), 0, time.perf_counter()
    while len(eof) < partitions:
        for m in c.consume(1000, 0.1):
            if m.error() is None:
                n += 1
            elif m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
    took = time.perf_counter() - start
    c.close()
    return n / took


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class Bench:
    def __init__(self, bootstrap: str, home: Path):
        self.bootstrap, self.home = bootstrap, home
        self.rport = free_port()
        self.receivers = subprocess.Popen([sys.executable, "-m", "bench.flow", "--receivers", str(self.rport)], cwd=ROOT)
        wait_port(self.rport)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.rport}", trust_env=False, timeout=30)
        self.metastore_url = f"sqlite:///{home / 'metastore.db'}"
        self.store = GatewayStore(Metastore(self.metastore_url))
        self.settings = GatewaySettings(allow_http=True, allow_sinks=(ipaddress.ip_network("127.0.0.1/32"),))
        self.gateways: list[subprocess.Popen] = []
        self.topic_n = 0

    def topic(self, partitions: int) -> tuple[str, DataProductSpec]:
        self.topic_n += 1
        name = f"bench.flow.{self.topic_n}.{os.getpid()}"
        ensure_topic(self.bootstrap, name, partitions)
        spec = spec_for(name)
        products = self.home / f"products{self.topic_n}"
        products.mkdir()
        (products / "clicks.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
        self.products = products
        return name, spec

    def subscribe(self, spec: DataProductSpec, n: int, **config) -> list[str]:
        service = FlowService(self.store, [spec], self.settings, self.bootstrap)
        ids = []
        for i in range(n):
            sub, _ = service.create(ORG, {"source": "/flowsuite/products/clicks", "protocol": "HTTP",
                                          "sink": f"http://127.0.0.1:{self.rport}/s{self.topic_n}-{i}", "config": config})
            ids.append(sub.id)
        return ids

    def start_gateway(self) -> psutil.Process:
        env = {**os.environ, "FLOWSUITE_PRODUCTS_DIR": str(self.products), "FLOWSUITE_HOME": str(self.home),
               "FLOWSUITE_METASTORE_URL": self.metastore_url, "FLOWSUITE_KAFKA_BOOTSTRAP": self.bootstrap,
               "FLOWSUITE_FLOW_ALLOW_HTTP": "true", "FLOWSUITE_FLOW_ALLOW_SINKS": "127.0.0.1/32"}
        log = open(self.home / f"gateway{self.topic_n}.log", "wb")
        gateway = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "flow", "serve", "--port", str(free_port())],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.gateways.append(gateway)
        return psutil.Process(gateway.pid)

    def stop_gateway(self) -> None:
        for gateway in self.gateways:
            if gateway.poll() is None:
                gateway.terminate()
            try:
                gateway.wait(20)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait(10)
        self.gateways = []
        for sub in self.store.list(states=["active"]):
            self.store.transition(sub.id, "deleted", ["active"], "bench done")

    def stats(self) -> dict:
        return self.http.get("/stats").json()

    def wait_count(self, prefix: str, total: int, timeout: float, rss: psutil.Process | None = None) -> tuple[float, int]:
        peak, deadline = 0, time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = {k: v for k, v in self.stats().items() if k.startswith(prefix)}
            if rss is not None:
                try:
                    peak = max(peak, rss.memory_info().rss + sum(c.memory_info().rss for c in rss.children()))
                except psutil.Error:
                    pass
            if sum(v["count"] for v in s.values()) >= total:
                starter = min(s.values(), key=lambda v: v["first"])
                last = max(v["last"] for v in s.values())
                # the first request's events arrived at `first`, not during the span: not counted
                return (total - starter["first_n"]) / max(last - starter["first"], 1e-6), peak
            time.sleep(0.2)
        got = sum(v["count"] for k, v in self.stats().items() if k.startswith(prefix))
        raise RuntimeError(f"{prefix}: only {got} of {total} events arrived in {timeout} s")

    def close(self) -> None:
        self.stop_gateway()
        self.receivers.terminate()
        self.receivers.wait(10)


def latency(bench: Bench, subscribers: int, mode: str, seconds: float) -> dict:
    topic, spec = bench.topic(2)
    config = {"mode": mode, "maxbatch": 500} if mode == "batched" else {}
    bench.subscribe(spec, subscribers, **config)
    bench.start_gateway()
    prefix = f"/s{bench.topic_n}-"
    # warm up: every subscriber's partitions are claimed and flowing before the clock starts
    p = Producer({"bootstrap.servers": bench.bootstrap})
    for partition in (0, 1):
        p.produce(topic, value=record(-1, False), partition=partition)
    p.flush(30)
    bench.wait_count(prefix, 2 * subscribers, timeout=120)
    n = produce_paced(bench.bootstrap, topic, 1000, seconds)
    bench.wait_count(prefix, (n + 2) * subscribers, timeout=seconds * 20 + 60)
    lat = [x for k, v in bench.stats().items() if k.startswith(prefix) for x in v["lat"]]
    bench.stop_gateway()
    return {"p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "p99": pct(lat, 0.99), "events": len(lat)}


def throughput(bench: Bench, events: int, mode: str, subscribers: int = 1) -> tuple[float, float, int]:
    topic, spec = bench.topic(2)
    produce_all(bench.bootstrap, topic, events)
    bare = bare_consumer(bench.bootstrap, topic, 2)
    config = {"startfrom": "earliest", **({"mode": "batched", "maxbatch": 1000} if mode == "batched" else {})}
    bench.subscribe(spec, subscribers, **config)
    proc = bench.start_gateway()
    rate, peak = bench.wait_count(f"/s{bench.topic_n}-", events * subscribers, timeout=900, rss=proc)
    bench.stop_gateway()
    return rate, bare, peak


def failover(bench: Bench, seconds: float) -> float:
    """Seconds of the longest pause in deliveries to either of two subscriptions around the
    SIGKILL of one of the two gateways sharing them (each holds one subscription's claim)."""
    import signal
    import threading

    from connectors.gateway.store import claim_product

    topic, spec = bench.topic(1)
    ids = bench.subscribe(spec, 2)
    bench.start_gateway()
    bench.start_gateway()
    producing = threading.Thread(target=produce_paced, args=(bench.bootstrap, topic, 500, seconds + 8), daemon=True)
    producing.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both gateways hold one claim each, and both paths receive
        holders = {c["run_id"] for i in ids for c in bench.store.metastore.claims_of(claim_product(i))}
        if len(holders) == 2 and len({k for k in bench.stats() if k.startswith(f"/s{bench.topic_n}-")}) == 2:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError("the two gateways did not share the two subscriptions within 60 s")
    time.sleep(1.0)
    prefix = f"/s{bench.topic_n}-"
    last: dict[str, int] = {}
    moved: dict[str, list[float]] = {}
    killed_at = None
    end = time.monotonic() + seconds + 4
    while time.monotonic() < end:
        now = time.monotonic()
        for path, v in bench.stats().items():
            if path.startswith(prefix) and v["count"] != last.get(path):
                last[path] = v["count"]
                moved.setdefault(path, []).append(now)
        if killed_at is None and now > end - seconds:
            bench.gateways[0].send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
        time.sleep(0.05)
    producing.join(30)
    bench.stop_gateway()
    gaps = [b - a for times in moved.values() for a, b in zip(times, times[1:], strict=False)
            if b >= killed_at and a <= killed_at + 3.5]
    if not gaps:
        raise RuntimeError("no deliveries after the SIGKILL")
    return max(gaps)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receivers", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--binary-events", type=int, default=5_000)
    ap.add_argument("--many", type=int, default=50)
    ap.add_argument("--only", default="latency,throughput,many,failover", help="rows to run, comma-separated")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if args.receivers:
        run_receivers(args.receivers)
        return 0
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, running_broker(port=free_port()) as broker:
        bench = Bench(broker.bootstrap, Path(tmp))
        try:
            for subs, mode in ((1, "binary"), (1, "batched"), (10, "batched")) if "latency" in only else ():
                r = latency(bench, subs, mode, args.seconds)
                print(f"latency {subs} subscriber(s) {mode}: p50 {r['p50'] * 1000:.0f} ms, p95 {r['p95'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms", flush=True)
                for q in ("p50", "p95", "p99"):
                    rows.append({"what": f"push latency {q}, 1,000 events/s, {subs} subscriber(s), {mode}",
                                 "figure": r[q] * 1000, "ceiling": None, "ratio": None,
                                 "goal": "p99 <= 250 ms" if q == "p99" else "", "unit": "ms"})
            for mode, n in (("binary", args.binary_events), ("batched", args.events)) if "throughput" in only else ():
                rate, bare, _ = throughput(bench, n, mode)
                print(f"throughput {mode}: {rate:,.0f} events/s vs bare consumer {bare:,.0f} → {rate / bare:.3f}", flush=True)
                rows.append({"what": f"events/s to one subscriber, {mode} ({n:,} events)", "figure": rate,
                             "ceiling": bare, "ratio": rate / bare, "goal": ">= 0.5" if mode == "batched" else "", "unit": "events/s"})
            if "many" in only:
                many_events = max(2_000, args.events // 10)
                rate, bare, peak = throughput(bench, many_events, "batched", subscribers=args.many)
                print(f"{args.many} subscribers: {rate:,.0f} events/s in total, gateway peak RSS {peak / 2**20:,.0f} MiB", flush=True)
                rows.append({"what": f"{args.many} subscribers batched, total events/s ({many_events:,} events each)", "figure": rate,
                             "ceiling": bare, "ratio": rate / bare, "goal": "", "unit": "events/s"})
                rows.append({"what": f"{args.many} subscribers, gateway peak RSS", "figure": peak / 2**20,
                             "ceiling": None, "ratio": None, "goal": "", "unit": "MiB"})
            if "failover" in only:
                gap = failover(bench, args.seconds)
                print(f"failover: longest pause in deliveries around a SIGKILL {gap:.2f} s", flush=True)
                rows.append({"what": "failover: SIGKILL of one of two gateways → deliveries resume (longest pause)",
                             "figure": gap, "ceiling": None, "ratio": None, "goal": "<= 3 s", "unit": "s"})
        finally:
            bench.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    # a subset (--only) is written beside the full run's figures, never over them
    out = RESULTS / ("flow.json" if only >= {"latency", "throughput", "many", "failover"} else "flow.partial.json")
    out.write_text(json.dumps({"bench": "flow", "machine": machine, "rows": rows,
                                                   "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                                                   "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
