"""Two flowsuite installations federate (docs/flow.md, "Inbound"): organisation A (ads, the
demo's home) and organisation B (partner p-001, running its own flowsuite: its own
FLOWSUITE_HOME, broker, metastore and lake, products in examples/federation/p-001/).

B subscribes to A's `clicks` through A's Subscriptions API with B's own inbound endpoint
(`POST /inbound/ads_clicks`) as the sink; B's endpoint consents to the handshake for A's origin;
B keeps the secret A returns in `FLOWSUITE_INBOUND_ADS_SECRET` and restarts its inbound; A's
owner approves; A's gateway pushes batches of signed CloudEvents, which B acknowledges only
once its broker has. Mid-stream A's gateway is SIGKILLed and B's inbound SIGKILLed and
restarted; A's gateway starts again and resends what was not acknowledged. B then lands
`ads_clicks` like any product, and B's lake holds every event A sent exactly once; B's click
count per hour equals A's `partner_engagement` for p-001.

Then pull (`run_pull`): a puller of p-001 behind a firewall — no port of its own — subscribes to
A's clicks with `config.delivery: pull` and receives and acknowledges them all, each once.

`run_federation` and `run_pull` are the story (the demo's section prints their lines; tests/
orchestration/test_federation.py judges them); every process is a real `flowsuite flow serve`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from connectors.engine import Engine
from connectors.settings import REPO_ROOT, Settings

PARTNER = "p-001"
B_PRODUCT = "ads_clicks"
B_PRODUCTS_DIR = REPO_ROOT / "examples" / "federation" / PARTNER / "dataproducts"
A_ORIGIN = "ads.flowsuite.example"  # A's WebHook-Request-Origin, registered in B's ads_clicks.yaml
SECRET_ENV = "FLOWSUITE_INBOUND_ADS_SECRET"


def engine_of(settings: Settings) -> Engine:
    """The engine of one organisation's settings, as the CLI builds it (connectors/engine.py):
    its lake with the settings' S3 options, its shared metastore, its specs with their checks."""
    from quality.expectations import spec_checks

    settings.home.mkdir(parents=True, exist_ok=True)  # the default SQLite files live there
    return Engine.from_settings(settings, spec_checks=spec_checks)


def _free_port() -> int:
    from orchestration.services.broker import free_port

    return free_port()


class Serve:
    """One `flowsuite flow serve` process of an organisation, logging to a file of its own."""

    def __init__(self, name: str, env: dict[str, str], port: int, log: Path, deliver: bool):
        self.name, self.env, self.port, self.log, self.deliver = name, env, port, log, deliver
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> Serve:
        cmd = [sys.executable, "-m", "orchestration.cli", "flow", "serve", "--port", str(self.port)]
        if not self.deliver:
            cmd.append("--no-deliver")
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=out, cwd=REPO_ROOT)
        return self

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                httpx.options(self.url + path, timeout=1.0, trust_env=False)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer on {self.url} within {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully, the gateway stops its workers
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment of a flowsuite process of this installation."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSUITE_") and k != "DAGSTER_HOME"}
    env.update({
        "FLOWSUITE_HOME": str(settings.home), "FLOWSUITE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FLOWSUITE_LAKE_URL": settings.lake_url, "FLOWSUITE_METASTORE_URL": settings.metastore_url,
        "FLOWSUITE_WAREHOUSE_URL": settings.warehouse_url, "FLOWSUITE_PRODUCTS_DIR": str(settings.products_dir),
        "DAGSTER_HOME": str(settings.dagster_home),
    })
    for var in ("FLOWSUITE_S3_ENDPOINT",):  # the lake's S3 endpoint, when A's lake is on S3
        if os.environ.get(var):
            env[var] = os.environ[var]
    return env


@dataclass
class Federation:
    """What happened, for the demo's lines and the test's assertions."""

    lines: list[str] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)  # ce_ids A sent: its valid p-001 records
    b_lake: Counter = field(default_factory=Counter)  # ce_id → live rows in B's lake
    b_topic_records: int = 0
    landed: int = 0
    quarantined: int = 0
    hour_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # hour → (B's clicks, A's partner_engagement)
    killed_at: int | None = None  # events B had acknowledged when both processes were killed
    b_clicks: dict[str, set[str]] = field(default_factory=dict)  # hour → distinct click event_ids in B's lake
    timings: dict[str, float] = field(default_factory=dict)  # seconds since the approval, per phase

    @property
    def exactly_once(self) -> bool:
        return set(self.b_lake) == self.expected and all(n == 1 for n in self.b_lake.values())

    @property
    def counts_equal(self) -> bool:
        return bool(self.hour_counts) and all(b == a for b, a in self.hour_counts.values())


def run_federation(a: Settings, *, b_broker_port: int | None = None, kill: bool = True, maxbatch: int = 50,
                   rate: int = 300, timeout_s: float = 180.0) -> Federation:
    """A pushes B's events to B's inbound; `rate` (requests per minute, the subscription's
    config.rate) paces it so the kill falls mid-stream: unpaced, the whole backlog can be
    delivered before anyone sees a third of it acknowledged."""
    import httpx

    from connectors.engine import release_metastore
    from connectors.gateway import GatewayStore
    from connectors.gateway.events import product_source
    from connectors.gateway.health import partition_lag
    from connectors.gateway.inbound.log import DeliveryLog
    from connectors.settings import load_settings
    from orchestration.services.broker import start_broker, stop_broker

    out = Federation()
    t0 = time.monotonic()
    a_engine = engine_of(a)
    clicks = a_engine.spec("clicks")
    a_metastore, a_lake = a_engine.metastore(), a_engine.lake()
    out.expected = _sent_by_a(a_lake, a_metastore, clicks.name)
    if not out.expected:
        out.lines.append(f"A's lake holds no clicks of {PARTNER} yet: nothing to federate")
        return out

    b_home = a.home / "federation" / PARTNER
    shutil.rmtree(b_home, ignore_errors=True)  # B's broker keeps memory only: B starts afresh each time
    b_home.mkdir(parents=True)
    b_port = b_broker_port or _free_port()
    b = load_settings({"FLOWSUITE_HOME": str(b_home), "FLOWSUITE_KAFKA_BOOTSTRAP": f"127.0.0.1:{b_port}",
                       "FLOWSUITE_PRODUCTS_DIR": str(B_PRODUCTS_DIR)})
    release_metastore(b.metastore_url)  # B's files were just removed: its metastore opens afresh
    start_broker(b_home, port=b_port)
    b_env = settings_env(b)
    a_env = {**settings_env(a), "FLOWSUITE_FLOW_ORIGIN": A_ORIGIN, "FLOWSUITE_FLOW_ALLOW_HTTP": "true",
             "FLOWSUITE_FLOW_ALLOW_SINKS": "127.0.0.1/32", "FLOWSUITE_FLOW_LEASE_S": "2", "FLOWSUITE_FLOW_RETRY_CAP_S": "1"}
    b_port_http, a_port_http = _free_port(), _free_port()
    b_inbound = Serve("B's inbound", b_env, b_port_http, b_home / "inbound.log", deliver=False).start()
    a_gateway = Serve("A's gateway", a_env, a_port_http, a.home / "federation" / "ads-gateway.log", deliver=True).start()
    sink = f"{b_inbound.url}/inbound/{B_PRODUCT}"
    store = GatewayStore(a_metastore)
    partner = httpx.Client(base_url=a_gateway.url, headers={"Authorization": f"Bearer {store.create_token(PARTNER)}"},
                           timeout=60, trust_env=False)
    owner = httpx.Client(base_url=a_gateway.url, headers={"Authorization": f"Bearer {store.create_token(clicks.owner)}"},
                         timeout=60, trust_env=False)
    sub_id = None
    b_engine = None
    try:
        b_inbound.wait_ready(f"/inbound/{B_PRODUCT}")
        a_gateway.wait_ready("/subscriptions")
        out.lines.append(f"organisation B ({PARTNER}) runs its own flowsuite: home {b_home}, broker 127.0.0.1:{b_port}, "
                         f"product {B_PRODUCT} (inbound from ads, {B_PRODUCTS_DIR.relative_to(REPO_ROOT)})")
        resp = partner.post("/subscriptions", json={
            "source": product_source(clicks), "protocol": "HTTP", "sink": sink,
            "filters": [{"exact": {"partnerid": PARTNER}}],
            "config": {"startfrom": "earliest", "mode": "batched", "maxbatch": maxbatch, "rate": rate},
        })
        if resp.status_code != 201:
            raise RuntimeError(f"A refused B's subscription: HTTP {resp.status_code} {resp.text[:300]}")
        created = resp.json()
        sub_id = created["id"]
        out.lines.append(f"B → A: POST /subscriptions, sink {sink} (batched, {maxbatch} per request, {rate} requests/min) → 201, "
                         f"state {created['state']}: B's endpoint consented to A's handshake (origin {A_ORIGIN})")
        b_inbound.stop()  # B keeps the secret shown once where its spec says, and restarts its inbound
        b_inbound.env = {**b_env, SECRET_ENV: created["webhooksecret"]}
        b_inbound.start().wait_ready(f"/inbound/{B_PRODUCT}")
        out.lines.append(f"B stores the webhooksecret in {SECRET_ENV} and restarts its inbound")
        approved = owner.post(f"/subscriptions/{sub_id}/approve").json()
        out.lines.append(f"{clicks.owner} (A, owner of clicks) approves → {approved['state']}; A pushes "
                         f"{len(out.expected):,} events of {PARTNER}")
        b_engine = engine_of(b)
        b_log = DeliveryLog(b_engine.metastore())
        started = time.monotonic()
        out.timings["setup"] = started - t0
        if kill:
            third = max(1, len(out.expected) // 3)
            _wait(lambda: b_log.totals(B_PRODUCT).get("ads", 0) >= third, timeout_s, "B to acknowledge a third")
            out.killed_at = b_log.totals(B_PRODUCT).get("ads", 0)
            out.timings["a third acknowledged"] = time.monotonic() - started
            a_gateway.kill()
            b_inbound.kill()
            b_inbound.start()
            a_gateway.start()
            b_inbound.wait_ready(f"/inbound/{B_PRODUCT}")
            out.lines.append(f"mid-stream ({out.killed_at:,} events acknowledged by B): A's gateway SIGKILLed, B's "
                             "inbound SIGKILLed and restarted; A's gateway started again")

        def delivered() -> bool:
            sub = store.get(sub_id)
            lag = partition_lag(store, clicks, sub, a.kafka_bootstrap)
            return bool(lag) and all(v["lag"] == 0 for v in lag.values())

        _wait(delivered, timeout_s, "A's subscription to reach the end of clicks")
        out.timings["delivered"] = time.monotonic() - started
        sub = store.get(sub_id)
        out.lines.append(f"A: delivered to B in {time.monotonic() - started:.1f} s ({sub.delivered:,} events counted, "
                         f"last outcome {sub.last_outcome}); lag 0 on every partition")
        out.lines += _land_b(b_engine, out)
        out.timings["land"] = time.monotonic() - started
        out.lines += _compare(a_lake, a_metastore, out)
    finally:
        if sub_id is not None:
            partner.delete(f"/subscriptions/{sub_id}")  # the demo cleans up; a partner would keep it
        partner.close()
        owner.close()
        a_gateway.stop()
        b_inbound.stop()
        if b_engine is not None:
            release_metastore(b.metastore_url)  # B's home goes with the next run
        stop_broker(b_home)
    return out


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _sent_by_a(lake, metastore, product: str) -> set[str]:
    """The ce_ids A's gateway sends B: every valid record of p-001 in A's topic, which A's lake
    holds exactly once (the demo landed all of it), as `<product>-<partition>-<offset>`."""
    import pyarrow.compute as pc

    files = metastore.live_files(product)
    if not files:
        return set()
    table = lake.read_tables([f.path for f in files], columns=["partner_id", "_partition", "_offset"])
    mine = table.filter(pc.equal(table.column("partner_id"), PARTNER))
    return {f"{product}-{p}-{o}" for p, o in zip(mine.column("_partition").to_pylist(), mine.column("_offset").to_pylist(),
                                                 strict=True)}


def _land_b(b: Engine, out: Federation) -> list[str]:
    """B lands ads_clicks and syncs its warehouse table with the engine its `ads_clicks_ingest`
    job runs (Dagster-free here, to keep the demo quick; `flowsuite land ads_clicks` in B's
    home runs the job itself, with its checks)."""
    from connectors.flows import LandingOptions, land_run
    from connectors.warehouse import WarehouseSink, sync

    spec = b.spec(B_PRODUCT)
    out.b_topic_records = topic_record_count(b.kafka_bootstrap, B_PRODUCT)
    lake, b_metastore = b.lake(), b.metastore()
    result = land_run(spec, b.run_context(), LandingOptions(idle_timeout_s=10))
    sink = WarehouseSink(spec, b.warehouse_url)
    try:
        synced = sync(spec, lake=lake, metastore=b_metastore, sink=sink)
        import sqlalchemy as sa

        with sink.engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(sink.table)).scalar_one()
    finally:
        sink.dispose()
    del synced
    for f in b_metastore.live_files(B_PRODUCT):
        table = lake.read_tables([f.path], columns=["ce_id", "event_id", "kind"])
        out.b_lake.update(table.column("ce_id").to_pylist())
        hour = out.b_clicks.setdefault(f.hour, set())
        hour.update(e for e, k in zip(table.column("event_id").to_pylist(), table.column("kind").to_pylist(), strict=True)
                    if k == "click")
    out.landed, out.quarantined = result.landed, result.quarantined
    return [
        f"B's topic {B_PRODUCT} holds {out.b_topic_records:,} records for {len(out.expected):,} events (what was in "
        "flight when the processes died can reach it twice; a retried webhook-id never does)",
        f"B lands {B_PRODUCT}: {result.landed:,} landed, {result.quarantined:,} quarantined as duplicate ce_id; "
        f"warehouse table {spec.table_name}: {rows:,} rows → "
        + ("every event A sent, exactly once" if out.exactly_once else
           f"NOT exactly once: {len(out.expected - set(out.b_lake))} missing, "
           f"{sum(1 for n in out.b_lake.values() if n > 1)} twice"),
    ]


def _compare(a_lake, a_metastore, out: Federation) -> list[str]:
    """B's distinct clicks per hour against A's partner_engagement for p-001."""
    from examples.engagement import read_lake

    served = {r["hour_start"].strftime("%Y-%m-%d-%H"): r["clicks"]
              for r in read_lake(a_lake, a_metastore).to_pylist() if r["partner_id"] == PARTNER}
    b_clicks = out.b_clicks
    out.hour_counts = {h: (len(b_clicks.get(h, ())), n) for h, n in served.items()}
    for h in set(b_clicks) - set(served):
        out.hour_counts[h] = (len(b_clicks[h]), 0)
    if not out.hour_counts:
        return ["A serves no partner_engagement for p-001 yet: nothing to compare"]
    hour = max(served, key=lambda h: served[h]) if served else max(out.hour_counts)
    theirs, ours = out.hour_counts[hour]
    verdict = "equal" if out.counts_equal else "DIFFERENT in " + ", ".join(
        h for h, (x, y) in sorted(out.hour_counts.items()) if x != y)
    return [f"{PARTNER}'s clicks in hour {hour}, counted in B's lake: {theirs:,}; A's partner_engagement serves "
            f"{ours:,}; all {len(out.hour_counts)} hours → {verdict}"]


def topic_record_count(bootstrap: str, topic: str, timeout: float = 30.0) -> int:
    """Records in the topic, read to the end of every partition (the embedded broker's
    high watermark is not the end after batched produce)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "flowsuite.demo.count", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    try:
        parts = consumer.list_topics(timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        n, open_parts, deadline = 0, set(parts), time.monotonic() + timeout
        while open_parts and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    n += 1
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(msg.partition())
        return n
    finally:
        consumer.close()


@dataclass
class Pulled:
    """What the puller behind a firewall got, for the demo's lines and the test's assertions."""

    lines: list[str] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)  # ce_ids of p-001's valid records in A's lake
    received: Counter = field(default_factory=Counter)  # ce_id → times received
    acknowledged: int = 0  # tokens A answered as acknowledged
    receives: int = 0
    delivered: int = 0  # A's count for the subscription (moved with each acknowledge)

    @property
    def exactly_once(self) -> bool:
        return set(self.received) == self.expected and all(n == 1 for n in self.received.values()) \
            and self.acknowledged == self.delivered == len(self.expected)


def run_pull(a: Settings, *, max_events: int = 500, timeout_s: float = 120.0) -> Pulled:
    """A puller of p-001 behind a firewall — it opens no port, every call goes out to A — subscribes
    to A's clicks with `config.delivery: pull`, A's owner approves, and it receives and acknowledges
    until A has nothing more: every p-001 event A's lake holds, each once, in order per partition."""
    import httpx

    from connectors.gateway import GatewayStore
    from connectors.gateway.events import product_source

    out = Pulled()
    a_engine = engine_of(a)
    clicks = a_engine.spec("clicks")
    metastore = a_engine.metastore()
    out.expected = _sent_by_a(a_engine.lake(), metastore, clicks.name)
    store = GatewayStore(metastore)
    gateway = Serve("A's gateway (pull)", settings_env(a), _free_port(), a.home / "federation" / "ads-pull.log",
                    deliver=False)
    (a.home / "federation").mkdir(parents=True, exist_ok=True)
    gateway.start()
    partner = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {store.create_token(PARTNER)}"},
                           timeout=90, trust_env=False)
    owner = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {store.create_token(clicks.owner)}"},
                         timeout=60, trust_env=False)
    sub_id = None
    try:
        gateway.wait_ready("/subscriptions")
        resp = partner.post("/subscriptions", json={
            "source": product_source(clicks), "protocol": "HTTP", "filters": [{"exact": {"partnerid": PARTNER}}],
            "config": {"delivery": "pull", "startfrom": "earliest", "lockduration": 60}})
        if resp.status_code != 201:
            raise RuntimeError(f"A refused the pull subscription: HTTP {resp.status_code} {resp.text[:300]}")
        sub_id = resp.json()["id"]
        out.lines.append(f"a puller at {PARTNER} behind a firewall (no inbound port, no sink): POST /subscriptions "
                         f"with config.delivery pull → 201, {resp.json()['state']}")
        owner.post(f"/subscriptions/{sub_id}/approve").raise_for_status()
        started = time.monotonic()
        last: dict[str, int] = {}
        in_order = True
        while time.monotonic() - started < timeout_s:
            got = partner.post(f"/subscriptions/{sub_id}:receive", params={"maxEvents": max_events, "maxWaitTime": 2})
            got.raise_for_status()
            items = got.json()["value"]
            out.receives += 1
            if not items:
                break
            for item in items:
                ev = item["event"]
                out.received[ev["id"]] += 1
                seq = int(ev["sequence"])
                in_order = in_order and seq > last.get(ev["flowpartition"], -1)
                last[ev["flowpartition"]] = seq
            tokens = [i["brokerProperties"]["lockToken"] for i in items]
            acked = partner.post(f"/subscriptions/{sub_id}:acknowledge", json={"lockTokens": tokens})
            acked.raise_for_status()
            out.acknowledged += len(acked.json()["succeededLockTokens"])
        took = time.monotonic() - started
        out.delivered = partner.get(f"/subscriptions/{sub_id}").json()["status"]["delivered"]
        out.lines.append(f"it received {sum(out.received.values()):,} events in {out.receives} receives (up to "
                         f"{max_events} each) and acknowledged {out.acknowledged:,} in {took:.1f} s; A counts "
                         f"{out.delivered:,} delivered; per partition in offset order: {'yes' if in_order else 'NO'}")
        out.lines.append(f"received = the {len(out.expected):,} p-001 events A's lake holds: "
                         + ("every one, exactly once" if out.exactly_once else
                            f"NOT exactly once: {len(out.expected - set(out.received))} missing, "
                            f"{sum(1 for n in out.received.values() if n > 1)} twice"))
    finally:
        if sub_id is not None:
            partner.delete(f"/subscriptions/{sub_id}")
        partner.close()
        owner.close()
        gateway.stop()
    return out


def federation_section(demo) -> list[str] | None:
    """The demo's section: A is the demo's home; B's broker takes FLOWSUITE_FEDERATION_BROKER_PORT
    when set (else a free port). Then a puller of p-001 behind a firewall takes the same events."""
    port = os.environ.get("FLOWSUITE_FEDERATION_BROKER_PORT")
    result = run_federation(demo.settings, b_broker_port=int(port) if port and port.isdigit() else None)
    return result.lines + run_pull(demo.settings).lines


