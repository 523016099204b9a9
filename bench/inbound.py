"""Inbound flow: signed CloudEvents accepted and durably in Kafka, against a bare producer.

    python -m bench.inbound [--rounds 3] [--events 20000] [--seconds 10]
    python -m bench.inbound --profile [--events 20000]    # where one request's time goes (cProfile)
    python -m bench.inbound --stages                      # a request's CPU before the produce, by step (min of 60)

On an embedded Tansu broker, with the inbound endpoint running as `flowsuite flow serve
--no-deliver` in its own process (a products folder holding one inbound product), and the
sending organisation's client (httpx, signing every request as Standard Webhooks says) in
this one:

1. events/s accepted — answered 2xx, so acknowledged by the broker — in batched mode (500
   events per `application/cloudevents-batch+json` request, 4 requests in flight), against a
   bare idempotent producer (`acks=all`) of the same records (the same key, value and `ce_*`
   headers) to the same broker, in the same round; rounds alternate which goes first;
   goal >= 0.5 of the bare producer;
2. the same in binary mode (one event per request, 16 in flight), no goal;
3. request latency at 1,000 events/s for `--seconds`: batched (50 events every 50 ms) and
   binary (1,000 requests/s), measured from each request's scheduled start (so a server that
   falls behind shows it); goal p99 <= 100 ms.

Writes bench/results/inbound.json. The sender shares the machine's cores with the server and the
broker: figures depend on the load; say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from confluent_kafka import Producer

from bench.stats import print_rows, ratio_row
from connectors.gateway.signing import webhook_headers
from connectors.kafka import ensure_topic
from connectors.settings import REPO_ROOT, load_settings
from orchestration.demo.federation import B_PRODUCTS_DIR, SECRET_ENV, Serve, settings_env
from orchestration.services.broker import free_port, running_broker

RESULTS = REPO_ROOT / "bench" / "results"
SOURCE, TYPE, ORIGIN = "/flowsuite/products/clicks", "com.flowsuite.clicks.event", "ads.flowsuite.example"


def event(i: int) -> dict:
    data = {"event_id": f"e{i}", "user_id": f"u{i % 997}", "partner_id": "p-001", "ad_id": f"ad-{i % 31}",
            "kind": "click" if i % 3 else "impression", "cost_micros": 1000 + i % 5000,
            "event_time": f"2026-12-01T10:{(i // 60) % 60:02d}:{i % 60:02d}Z"}
    return {"specversion": "1.0", "id": f"clicks-0-{i}", "source": SOURCE, "type": TYPE, "time": data["event_time"],
            "datacontenttype": "application/json", "partitionkey": data["event_id"], "subject": data["event_id"],
            "sequence": f"{i:020d}", "flowpartition": "0", "partnerid": "p-001", "data": data}


def bare_records(events: list[dict]) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """What the inbound endpoint produces for these events: binary-mode records."""
    out = []
    for e in events:
        headers = [(f"ce_{k}", str(v).encode()) for k, v in e.items() if k not in ("data", "datacontenttype")]
        headers += [("content-type", b"application/json"), ("flowsuite.inbound.org", b"ads")]
        out.append((e["data"]["event_id"].encode(), json.dumps(e["data"], separators=(",", ":")).encode(), headers))
    return out


class Endpoint:
    """The inbound process of one round: a fresh topic, a products folder naming it."""

    def __init__(self, tmp: Path, bootstrap: str, n: int):
        self.topic = f"bench.inbound.{n}.{int(time.time() * 1000)}"
        ensure_topic(bootstrap, self.topic, 2)
        folder = tmp / f"products-{n}"
        folder.mkdir()
        text = (B_PRODUCTS_DIR / "ads_clicks.yaml").read_text().replace("topic: ads_clicks", f"topic: {self.topic}")
        (folder / "ads_clicks.yaml").write_text(text.replace("rate: 6000", "rate: 1000000"))
        settings = load_settings({"FLOWSUITE_HOME": str(tmp / f"home-{n}"), "FLOWSUITE_KAFKA_BOOTSTRAP": bootstrap,
                                  "FLOWSUITE_PRODUCTS_DIR": str(folder)})
        settings.home.mkdir(parents=True)
        import base64
        import secrets

        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.serve = Serve("inbound", {**settings_env(settings), SECRET_ENV: self.secret}, free_port(),
                           settings.home / "inbound.log", deliver=False)
        self.serve.start().wait_ready("/inbound/ads_clicks")
        self.url = self.serve.url + "/inbound/ads_clicks"
        self.local = threading.local()

    def client(self) -> httpx.Client:
        if not hasattr(self.local, "client"):
            self.local.client = httpx.Client(timeout=60, trust_env=False)
        return self.local.client

    def post_batch(self, events: list[dict], msg_id: str) -> None:
        body = json.dumps(events, separators=(",", ":")).encode()
        self._post(body, {"content-type": "application/cloudevents-batch+json"}, msg_id)

    def post_binary(self, e: dict) -> None:
        headers = {f"ce-{k}": str(v) for k, v in e.items() if k not in ("data", "datacontenttype")}
        headers["content-type"] = "application/json"
        self._post(json.dumps(e["data"], separators=(",", ":")).encode(), headers, e["id"])

    def _post(self, body: bytes, headers: dict[str, str], msg_id: str) -> None:
        send = {**headers, **webhook_headers([self.secret], msg_id, body), "WebHook-Request-Origin": ORIGIN}
        resp = self.client().post(self.url, content=body, headers=send)
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:300]}")

    def stop(self) -> None:
        self.serve.stop()


def inbound_rate(ep: Endpoint, events: list[dict], mode: str) -> float:
    if mode == "batched":
        units, inflight = [events[i:i + 500] for i in range(0, len(events), 500)], 4
        send = lambda k: ep.post_batch(units[k], f"batch-{k}")  # noqa: E731
    else:
        units, inflight = events, 16
        send = lambda k: ep.post_binary(units[k])  # noqa: E731
    started = time.perf_counter()
    with ThreadPoolExecutor(inflight) as pool:
        list(pool.map(send, range(len(units))))
    return len(events) / (time.perf_counter() - started)


def bare_rate(bootstrap: str, topic: str, records) -> float:
    """A warmed-up idempotent producer: produce every record, then flush (every acknowledgement in)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                         "partitioner": "murmur2_random"})
    failed = []
    producer.produce(topic, value=b"{}", key=b"warm-up")  # connection and producer id, as the endpoint's warm-up
    producer.flush(30)
    started = time.perf_counter()
    for key, value, headers in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers,
                                 on_delivery=lambda err, _m: err and failed.append(err))
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(60)
    rate = len(records) / (time.perf_counter() - started)
    if failed:
        raise RuntimeError(f"the bare producer lost {len(failed)} record(s): {failed[0]}")
    return rate


def latency(ep: Endpoint, seconds: float, per_request: int) -> list[float]:
    """Requests of `per_request` events at 1,000 events/s, each timed from its scheduled start."""
    interval = per_request / 1000.0
    n = int(seconds / interval)
    events = [event(10_000_000 + i) for i in range(n * per_request)]
    start = time.perf_counter() + 0.5
    lat: list[float] = []
    lock = threading.Lock()

    def one(k: int) -> None:
        due = start + k * interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        unit = events[k * per_request:(k + 1) * per_request]
        if per_request == 1:
            ep.post_binary(unit[0])
        else:
            ep.post_batch(unit, f"lat-{k}")
        with lock:
            lat.append(time.perf_counter() - due)

    with ThreadPoolExecutor(64 if per_request == 1 else 8) as pool:
        list(pool.map(one, range(n)))
    return sorted(lat)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def profile(events_n: int, per_request: int = 500) -> None:
    """The inbound service in this process (no HTTP), under cProfile: batched requests of
    `per_request` events through `InboundService.receive`, timed by step."""
    import cProfile
    import pstats

    from connectors.gateway.inbound.service import InboundService
    from connectors.metastore import Metastore
    from connectors.spec import load_specs

    with tempfile.TemporaryDirectory() as tmp, running_broker(port=free_port()) as broker:
        topic = f"bench.inbound.profile.{int(time.time() * 1000)}"
        ensure_topic(broker.bootstrap, topic, 2)
        folder = Path(tmp) / "products"
        folder.mkdir()
        text = (B_PRODUCTS_DIR / "ads_clicks.yaml").read_text().replace("topic: ads_clicks", f"topic: {topic}")
        (folder / "ads_clicks.yaml").write_text(text.replace("rate: 6000", "rate: 1000000"))
        import base64
        import secrets

        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        metastore = Metastore(f"sqlite:///{tmp}/meta.db")
        service = InboundService(load_specs(folder), {SECRET_ENV: secret}, metastore, broker.bootstrap)
        events = [event(i) for i in range(events_n)]
        bodies = []
        for k in range(0, events_n, per_request):
            body = json.dumps(events[k:k + per_request], separators=(",", ":")).encode()
            headers = {"content-type": "application/cloudevents-batch+json", "webhook-request-origin": ORIGIN,
                       **{h.lower(): v for h, v in webhook_headers([secret], f"p-{k}", body).items()}}
            bodies.append((headers, body))
        warm_body = json.dumps(events[:1]).encode()
        service.receive("ads_clicks", {"content-type": "application/cloudevents-batch+json",
                                       "webhook-request-origin": ORIGIN,
                                       **{h.lower(): v for h, v in webhook_headers([secret], "w", warm_body).items()}},
                        warm_body)
        prof = cProfile.Profile()
        started = time.perf_counter()
        prof.enable()
        for headers, body in bodies:
            answer = service.receive("ads_clicks", headers, body)
            assert answer.status == 200, answer.body
        prof.disable()
        took = time.perf_counter() - started
        service.close()
        metastore.dispose()
    print(f"{events_n:,} events in {len(bodies)} requests of {per_request}: {events_n / took:,.0f} events/s "
          f"in-process (under cProfile), {took / len(bodies) * 1000:.1f} ms per request")
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative").print_stats(30)


def stages(repeat: int = 60, per_request: int = 500) -> None:
    """The CPU one batched request costs before the produce, by step, without a broker or HTTP:
    the minimum of `repeat` runs (robust on a loaded machine, where a mean measures the load)."""
    from connectors.gateway.inbound.events import envelope_problems, parse_request
    from connectors.gateway.inbound.senders import ProductSenders
    from connectors.gateway.inbound.service import InboundService
    from connectors.spec import load_specs

    spec = next(s for s in load_specs(B_PRODUCTS_DIR) if s.inbound is not None)
    sender = ProductSenders.resolve(spec, {}).senders[0]
    body = json.dumps([event(i) for i in range(per_request)], separators=(",", ":")).encode()
    headers = {"content-type": "application/cloudevents-batch+json"}
    service = InboundService.__new__(InboundService)  # _records needs no broker, no metastore
    best: list[float] | None = None
    for _ in range(repeat):
        at = [time.perf_counter()]
        _, events = parse_request(headers, body)
        at.append(time.perf_counter())
        envelope_problems(events)
        InboundService._policy(spec, sender, events)
        at.append(time.perf_counter())
        service._records(spec, sender, list(enumerate(events)))
        at.append(time.perf_counter())
        took = [b - a for a, b in zip(at, at[1:], strict=False)] + [at[-1] - at[0]]
        best = took if best is None else [min(a, b) for a, b in zip(best, took, strict=True)]
    parse, checks, records, total = (x * 1000 for x in best)
    print(f"one request of {per_request} events, min of {repeat}: parse {parse:.2f} ms, envelope + policy "
          f"{checks:.2f} ms, records (decoder, headers, keys) {records:.2f} ms; {total:.2f} ms before the produce")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--binary-events", type=int, default=3_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--profile", action="store_true", help="profile the request path in-process and stop")
    ap.add_argument("--stages", action="store_true", help="time a request's steps before the produce and stop")
    args = ap.parse_args()
    if args.profile:
        profile(args.events)
        return 0
    if args.stages:
        stages()
        return 0
    load_before = os.getloadavg()[0]
    rows: list[dict] = []
    figures: dict[str, list[float]] = {"batched": [], "binary": []}
    ceilings: dict[str, list[float]] = {"batched": [], "binary": []}
    with tempfile.TemporaryDirectory() as tmp, running_broker(port=free_port()) as broker:
        n = 0
        for r in range(args.rounds):
            for mode, count in (("batched", args.events), ("binary", args.binary_events)):
                events = [event(i) for i in range(count)]
                records = bare_records(events)
                n += 1
                ep = Endpoint(Path(tmp), broker.bootstrap, n)
                try:
                    ep.post_batch(events[:1], "warm-up")  # connections, producer, topic metadata
                    bare_topic = ep.topic + ".bare"
                    ensure_topic(broker.bootstrap, bare_topic, 2)
                    if r % 2 == 0:
                        fig, ceil = inbound_rate(ep, events, mode), bare_rate(broker.bootstrap, bare_topic, records)
                    else:
                        ceil, fig = bare_rate(broker.bootstrap, bare_topic, records), inbound_rate(ep, events, mode)
                finally:
                    ep.stop()
                figures[mode].append(fig)
                ceilings[mode].append(ceil)
                print(f"round {r + 1} {mode}: inbound {fig:,.0f} events/s, bare producer {ceil:,.0f} → {fig / ceil:.3f}",
                      flush=True)
        rows.append(ratio_row(f"inbound events/s acknowledged, batched 500/request ({args.events:,} events)",
                              figures["batched"], ceilings["batched"], ">= 0.5", "events/s"))
        rows.append(ratio_row(f"inbound events/s acknowledged, binary 1/request ({args.binary_events:,} events)",
                              figures["binary"], ceilings["binary"], None, "events/s"))
        n += 1
        ep = Endpoint(Path(tmp), broker.bootstrap, n)
        try:
            ep.post_batch([event(-1)], "warm-up")
            for label, per in (("batched 50/request", 50), ("binary 1/request", 1)):
                lat = latency(ep, args.seconds, per)
                p50, p95, p99 = pct(lat, 0.5), pct(lat, 0.95), pct(lat, 0.99)
                print(f"latency at 1,000 events/s, {label}: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
                      f"p99 {p99 * 1000:.1f} ms ({len(lat)} requests)", flush=True)
                for q, v in (("p50", p50), ("p95", p95), ("p99", p99)):
                    rows.append({"what": f"inbound request latency {q} at 1,000 events/s, {label}", "figure": v * 1000,
                                 "ceiling": None, "ratio": None, "rounds": [],
                                 "goal": "p99 <= 100 ms" if q == "p99" else "", "unit": "ms",
                                 "met": (v <= 0.1) if q == "p99" else None, "met_every": (v <= 0.1) if q == "p99" else None,
                                 "ratio_min": None, "ratio_max": None})
        finally:
            ep.stop()
    print_rows([r for r in rows if r.get("ceiling") is not None])
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    (RESULTS / "inbound.json").write_text(json.dumps({
        "bench": "inbound", "machine": machine, "rows": rows,
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
