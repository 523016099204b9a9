"""The flow gateway: push latency, throughput against a bare consumer, 50 subscribers, failover,
fan-out to 1/10/100/1,000 partner subscriptions and a hung receiver.

    python -m bench.flow [--seconds 10] [--events 40000] [--fanout 1,10,100,1000] [--fanout-rate 2000]

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
   (an upper bound of the time from the SIGKILL to the survivor's first delivery); goal <= 3 s;
5. fan-out: 1, 10, 100 and 1,000 subscriptions on one gateway process, each a partner
   organisation filtered to its own partner id, while `--fanout-rate` events/s flow for
   `--seconds` (each event is for exactly one partner): the gateway process's CPU seconds per
   event delivered (psutil's user + system times of the process, warm-up excluded; goal: flat
   in the number of subscriptions, the ratio column is against the first count), p99
   produce → receiver (goal <= 1 s at 1,000) and peak RSS (goal <= 1 GiB); also written to
   bench/results/flow_fanout.json;
6. a hung receiver: 10 batched subscribers at 1,000 events/s, one of whose receiver accepts the
   request and never answers; the p99 of the other nine against the same ten all answering
   (goal <= 250 ms).

`--only latency,throughput,many,failover,fanout,hung` runs a subset (quick checks while developing), written to
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
        if path.startswith("/hang") and method == "POST":  # the hung receiver: reads nothing, answers never
            import asyncio

            await asyncio.Event().wait()
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


def record(i: int, stamp: bool, partners: int = 250) -> bytes:
    t = time.time() if stamp else 0
    return (f'{{"event_id":"e{i}","partner_id":"p-{i % partners:03d}","event_time":"2026-11-30T10:00:00Z","t":{t}}}').encode()


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


def produce_paced(bootstrap: str, topic: str, rate: int, seconds: float, partners: int = 250) -> int:
    """Produce `rate` records a second for `seconds` (partner ids p-000.. cycling through
    `partners`); returns how many the broker acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    acked = []
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate)
        while n < due:
            p.produce(topic, key=f"l{n}".encode(), value=record(n, True, partners),
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

    def subscribe(self, spec: DataProductSpec, n: int, partner_filter: bool = False, hung: int = 0, **config) -> list[str]:
        """`n` subscriptions, each to its own path `/s<topic>-<i>` of the receivers; with
        `partner_filter` subscription i takes only partner p-<i>'s events (a partner
        organisation's own records); the first `hung` go to paths that never answer."""
        from concurrent.futures import ThreadPoolExecutor

        service = FlowService(self.store, [spec], self.settings, self.bootstrap)

        def create(i: int) -> str:
            path = f"/hang{self.topic_n}-{i}" if i < hung else f"/s{self.topic_n}-{i}"
            body = {"source": "/flowsuite/products/clicks", "protocol": "HTTP",
                    "sink": f"http://127.0.0.1:{self.rport}{path}", "config": config}
            if partner_filter:
                body["filters"] = [{"exact": {"partnerid": f"p-{i:03d}"}}]
            return service.create(ORG, body)[0].id

        # each creation is a handshake with its sink: several at once, or 1,000 take minutes
        with ThreadPoolExecutor(8 if n > 8 else 1) as pool:
            return list(pool.map(create, range(n)))

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
        try:
            self.receivers.wait(10)
        except subprocess.TimeoutExpired:  # uvicorn waits for open requests, and a hung path never ends one
            self.receivers.kill()
            self.receivers.wait(10)


def latency(bench: Bench, subscribers: int, mode: str, seconds: float) -> dict:
    topic, spec = bench.topic(2)
    config = {"mode": mode, "maxbatch": 500} if mode == "batched" else {}
    bench.subscribe(spec, subscribers, **config)
    bench.start_gateway()
    lat = paced_latencies(bench, topic, subscribers, seconds)
    return {"p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "p99": pct(lat, 0.99), "events": len(lat)}


def paced_latencies(bench: Bench, topic: str, answering: int, seconds: float) -> list[float]:
    """The delivery latencies of `answering` receivers for `seconds` at 1,000 events/s, after a
    warm-up (every subscriber's partitions claimed and flowing before the clock starts); stops
    the gateway."""
    prefix = f"/s{bench.topic_n}-"
    p = Producer({"bootstrap.servers": bench.bootstrap})
    for partition in (0, 1):
        p.produce(topic, value=record(-1, False), partition=partition)
    p.flush(30)
    bench.wait_count(prefix, 2 * answering, timeout=120)
    n = produce_paced(bench.bootstrap, topic, 1000, seconds)
    bench.wait_count(prefix, (n + 2) * answering, timeout=seconds * 20 + 60)
    lat = [x for k, v in bench.stats().items() if k.startswith(prefix) for x in v["lat"]]
    bench.stop_gateway()
    return lat


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


def cpu_s(proc: psutil.Process) -> float:
    """CPU seconds (user + system) the gateway process and its children have used so far."""
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
    except psutil.Error:
        return 0


def fanout(bench: Bench, subscribers: int, rate: int, seconds: float) -> dict:
    """`subscribers` partner organisations on one gateway process, each filtered to its own
    partner id, while `rate` events/s (partner ids cycling through the subscribers) flow for
    `seconds`: every event goes to exactly one subscription, so the events delivered are the
    events produced whatever the number of subscriptions. Measures the gateway's CPU seconds
    per event delivered over the paced window (warm-up excluded), p99 produce → receiver and
    the peak RSS."""
    topic, spec = bench.topic(2)
    bench.subscribe(spec, subscribers, partner_filter=True, mode="batched", maxbatch=500)
    proc = bench.start_gateway()
    prefix = f"/s{bench.topic_n}-"
    p = Producer({"bootstrap.servers": bench.bootstrap, "linger.ms": 5})
    for partition in (0, 1):  # warm up: every (subscription, partition) claimed and flowing
        for i in range(subscribers):
            p.produce(topic, value=record(i, False, subscribers), partition=partition)
    p.flush(30)
    bench.wait_count(prefix, 2 * subscribers, timeout=120 + subscribers * 0.3)
    time.sleep(1.0)  # the warm-up's commits and bookkeeping settle
    peak, idle0 = rss(proc), cpu_s(proc)
    time.sleep(1.0)  # an idle second's CPU: what holding the subscriptions costs without events
    idle = cpu_s(proc) - idle0
    cpu0, t0 = cpu_s(proc), time.monotonic()
    n = produce_paced(bench.bootstrap, topic, rate, seconds, partners=subscribers)
    deadline = time.monotonic() + seconds * 10 + 60
    while time.monotonic() < deadline:
        got = sum(v["count"] for k, v in bench.stats().items() if k.startswith(prefix))
        peak = max(peak, rss(proc))
        if got >= n + 2 * subscribers:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"fan-out {subscribers}: only {got - 2 * subscribers} of {n} events arrived")
    cpu, wall = cpu_s(proc) - cpu0, time.monotonic() - t0
    lat = [x for k, v in bench.stats().items() if k.startswith(prefix) for x in v["lat"]]
    bench.stop_gateway()
    return {"subscribers": subscribers, "events": n, "cpu_s": cpu, "wall_s": wall, "cpu_us_per_event": cpu / n * 1e6,
            "idle_cpu_per_s": idle, "p99": pct(lat, 0.99), "p50": pct(lat, 0.5), "rss": peak,
            # the machine is shared: the load beside the figure, and which code it measured
            "load_average": round(os.getloadavg()[0], 1), "commit": _commit(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def hung(bench: Bench, seconds: float, hung_receivers: int) -> dict:
    """10 subscribers (batched) at 1,000 events/s, the first `hung_receivers` of them to a
    receiver that accepts the connection and never answers: the p99 of the others."""
    topic, spec = bench.topic(2)
    bench.subscribe(spec, 10, hung=hung_receivers, mode="batched", maxbatch=500)
    bench.start_gateway()
    lat = paced_latencies(bench, topic, 10 - hung_receivers, seconds)
    return {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "events": len(lat)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receivers", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--binary-events", type=int, default=5_000)
    ap.add_argument("--many", type=int, default=50)
    ap.add_argument("--fanout", default="1,10,100,1000", help="subscription counts of the fan-out rows")
    ap.add_argument("--fanout-rate", type=int, default=2000, help="events/s produced in the fan-out rows")
    ap.add_argument("--only", default="latency,throughput,many,failover,fanout,hung", help="rows to run, comma-separated")
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
            fanned = []
            for subs in [int(x) for x in args.fanout.split(",") if x] if "fanout" in only else ():
                try:
                    r = fanout(bench, subs, args.fanout_rate, args.seconds)
                except RuntimeError as exc:  # outran its time box: say so, keep the other rows
                    print(f"fan-out {subs} partner subscription(s): did not finish: {exc}", flush=True)
                    bench.stop_gateway()
                    rows.append({"what": f"fan-out: {subs} partner subscription(s) did not finish its time box ({exc})",
                                 "figure": None, "ceiling": None, "ratio": None, "goal": "", "unit": ""})
                    continue
                fanned.append(r)
                print(f"fan-out {subs} partner subscription(s), {args.fanout_rate:,} events/s: "
                      f"{r['cpu_us_per_event']:,.0f} µs CPU/event, p99 {r['p99'] * 1000:,.0f} ms, "
                      f"peak RSS {r['rss'] / 2**20:,.0f} MiB, idle CPU {r['idle_cpu_per_s']:.2f} s/s", flush=True)
                base = fanned[0]["cpu_us_per_event"]
                rows += [
                    {"what": f"fan-out: gateway CPU per event delivered, {subs} partner subscription(s), "
                             f"{args.fanout_rate:,} events/s (ratio: vs {fanned[0]['subscribers']} subscription(s))",
                     "figure": r["cpu_us_per_event"], "ceiling": base, "ratio": r["cpu_us_per_event"] / base,
                     "goal": "flat", "unit": "µs"},
                    {"what": f"fan-out: push latency p99, {subs} partner subscription(s), {args.fanout_rate:,} events/s",
                     "figure": r["p99"] * 1000, "ceiling": None, "ratio": None,
                     "goal": "p99 <= 1 s" if subs >= 1000 else "", "unit": "ms"},
                    {"what": f"fan-out: gateway peak RSS, {subs} partner subscription(s)", "figure": r["rss"] / 2**20,
                     "ceiling": None, "ratio": None, "goal": "<= 1024 MiB" if subs >= 1000 else "", "unit": "MiB"},
                ]
            if fanned:
                RESULTS.mkdir(parents=True, exist_ok=True)
                (RESULTS / "flow_fanout.json").write_text(json.dumps(fanned, indent=1) + "\n")
            if "hung" in only:
                calm = hung(bench, args.seconds, 0)
                stuck = hung(bench, args.seconds, 1)
                print(f"hung receiver: the other nine p99 {stuck['p99'] * 1000:,.0f} ms vs "
                      f"{calm['p99'] * 1000:,.0f} ms with none hung", flush=True)
                rows.append({"what": "one hung receiver among 10 (batched, 1,000 events/s): the other nine's p99 "
                                     "(ratio: vs ten answering)", "figure": stuck["p99"] * 1000,
                             "ceiling": calm["p99"] * 1000, "ratio": stuck["p99"] / calm["p99"],
                             "goal": "p99 <= 250 ms", "unit": "ms"})
        finally:
            bench.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    # a subset (--only) is written beside the full run's figures, never over them
    out = RESULTS / ("flow.json" if only >= {"latency", "throughput", "many", "failover", "fanout", "hung"}
                     else "flow.partial.json")
    out.write_text(json.dumps({"bench": "flow", "machine": machine, "rows": rows,
                                                   "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                                                   "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
