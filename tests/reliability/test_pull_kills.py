"""Pull delivery under SIGKILL: a puller keeps receiving and acknowledging from a real `flowsuite
flow serve` process while that process is SIGKILLed at seeded random moments (mid-receive,
mid-acknowledge) and started again, and a producer keeps adding events.

The puller does what a pull subscriber does: `:receive` small batches, `:acknowledge` them (now
and then it leaves a batch to expire, so redelivery is exercised too), retry on a refused or cut
connection. The judges, from what the puller saw and from the metastore:
- every event is acknowledged once: the subscription's `delivered` count (moved in the same
  transaction as each acknowledge) equals the events sent, and every partition's position is at
  its end;
- an event comes again only when its last delivery was not acknowledged (never after a
  confirmed acknowledge), with a higher `deliveryCount`;
- order per partition: a partition's events are handed out in offset order — an event is first
  received only once every earlier one of its partition was acknowledged (or its acknowledge was
  cut by a kill).
Iterations: FLOWSUITE_RELIABILITY (1 kill in `make test`, about 20 s; 50 in `make reliability`). The
first batch received is always left to expire, so redelivery is exercised however few kills run.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
from confluent_kafka import Producer

from connectors.gateway import GatewayStore
from connectors.metastore import Metastore
from connectors.settings import REPO_ROOT, load_settings
from connectors.spec import load_specs
from orchestration.demo.federation import Serve, settings_env
from orchestration.services.broker import free_port
from tests.support import wait_for
from tests.support.reliability_table import SEED, iterations, record

PARTNER = "p-001"


def _products_dir(tmp_path: Path, topic: str) -> Path:
    folder = tmp_path / "products"
    folder.mkdir()
    text = (REPO_ROOT / "dataproducts" / "clicks.yaml").read_text().replace("topic: clicks", f"topic: {topic}")
    (folder / "clicks.yaml").write_text(text)
    return folder


class _Producer:
    """Adds clicks of two partners to both partitions until stopped; remembers where p-001's went."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic, self.stop_event = topic, threading.Event()
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "enable.idempotence": True})
        self.mine: list[tuple[int, int]] = []  # (partition, offset) of p-001's events
        self.ends: Counter = Counter()  # partition → records produced
        self.n = 0

    def _delivered(self, err, msg) -> None:
        assert err is None, err
        self.ends[msg.partition()] = max(self.ends[msg.partition()], msg.offset() + 1)
        if json.loads(msg.value())["partner_id"] == PARTNER:
            self.mine.append((msg.partition(), msg.offset()))

    def run(self) -> None:
        while not self.stop_event.is_set():
            for _ in range(10):
                i, self.n = self.n, self.n + 1
                rec = {"event_id": f"e{i}", "user_id": f"u{i % 97}", "partner_id": ("p-001", "p-002")[i % 2],
                       "ad_id": f"ad-{i % 13}", "kind": "click", "cost_micros": 1000 + i,
                       "event_time": f"2026-11-30T08:{(i // 60) % 60:02d}:{i % 60:02d}Z"}  # valid: clicks.yaml
                self.producer.produce(self.topic, key=f"e{i}".encode(), value=json.dumps(rec).encode(),
                                      partition=(i // 2) % 2, on_delivery=self._delivered)
            assert self.producer.flush(30) == 0
            time.sleep(0.1)  # about 100 events/s


MIN_EVENTS = 100


def test_sigkilled_pull_server_acknowledges_every_event_once_in_order(tmp_path, kafka_bootstrap, make_topic):
    kills = iterations(quick=1, full=50)
    rng = random.Random(SEED + 27)
    topic = make_topic(partitions=2)
    a = load_settings({"FLOWSUITE_HOME": str(tmp_path / "a"), "FLOWSUITE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                       "FLOWSUITE_PRODUCTS_DIR": str(_products_dir(tmp_path, topic))})
    a.home.mkdir(parents=True)
    spec = next(iter(load_specs(a.products_dir)))
    metastore = Metastore(a.metastore_url)
    store = GatewayStore(metastore)
    serve = Serve("pull", settings_env(a), free_port(), a.home / "serve.log", deliver=False)
    serve.start().wait_ready("/subscriptions")
    partner = {"Authorization": f"Bearer {store.create_token(PARTNER)}"}
    owner = {"Authorization": f"Bearer {store.create_token(spec.owner)}"}
    with httpx.Client(base_url=serve.url, timeout=30, trust_env=False) as c:
        resp = c.post("/subscriptions", headers=partner, json={
            "source": f"/flowsuite/products/{spec.name}", "protocol": "HTTP",
            "filters": [{"exact": {"partnerid": PARTNER}}],
            "config": {"delivery": "pull", "startfrom": "earliest", "lockduration": 2}})
        assert resp.status_code == 201, resp.text
        sub_id = resp.json()["id"]
        assert c.post(f"/subscriptions/{sub_id}/approve", headers=owner).status_code == 200

    producer = _Producer(kafka_bootstrap, topic)
    acked: Counter = Counter()  # ids whose acknowledge was answered as succeeded
    cut: set[str] = set()  # ids whose acknowledge request was cut by a kill (outcome unknown)
    last_count: dict[str, int] = {}
    first_seen: dict[int, list[int]] = defaultdict(list)  # partition → offsets in the order first received
    violations: list[str] = []
    stats = Counter()
    draining = threading.Event()
    finished = threading.Event()
    failure: list[BaseException] = []

    def settled(ev_id: str) -> bool:
        return acked[ev_id] > 0 or ev_id in cut

    def puller() -> None:
        prng = random.Random(SEED + 28)
        client = httpx.Client(base_url=serve.url, headers=partner, timeout=10, trust_env=False)
        try:
            while not finished.is_set():
                try:
                    resp = client.post(f"/subscriptions/{sub_id}:receive",
                                       params={"maxEvents": prng.randint(1, 60), "maxWaitTime": 1})
                except httpx.HTTPError:
                    stats["cut receives"] += 1
                    time.sleep(0.1)  # a puller's back-off while the server is down
                    continue
                if resp.status_code != 200:
                    violations.append(f"receive answered {resp.status_code}: {resp.text[:200]}")
                    continue
                items = resp.json()["value"]
                if not items:
                    continue
                by_part: dict[int, list[int]] = defaultdict(list)
                for item in items:
                    ev, props = item["event"], item["brokerProperties"]
                    p, o = int(ev["flowpartition"]), int(ev["sequence"])
                    by_part[p].append(o)
                    if acked[ev["id"]]:
                        violations.append(f"{ev['id']} delivered again after a confirmed acknowledge")
                    if props["deliveryCount"] <= last_count.get(ev["id"], 0):
                        violations.append(f"{ev['id']}: deliveryCount {props['deliveryCount']} not above "
                                          f"{last_count[ev['id']]}")
                    if ev["id"] in last_count:
                        stats["redelivered"] += 1
                    else:  # every earlier one settled, or handed out again before it in this very batch
                        earlier = [x for x in first_seen[p] if x < o and not settled(f"{spec.name}-{p}-{x}")
                                   and x not in by_part[p]]
                        if earlier:
                            violations.append(f"{ev['id']} handed out before {len(earlier)} earlier event(s) of "
                                              f"partition {p} were settled, e.g. offset {earlier[0]}")
                        first_seen[p].append(o)
                    last_count[ev["id"]] = props["deliveryCount"]
                for p, offs in by_part.items():
                    if offs != sorted(offs):
                        violations.append(f"partition {p} out of order in one receive: {offs[:10]}")
                if not stats["left to expire"] or (not draining.is_set() and prng.random() < 0.08):  # the first always
                    stats["left to expire"] += 1  # no acknowledge: the lock expires, the batch comes again
                    continue
                tokens = {i["brokerProperties"]["lockToken"]: i["event"]["id"] for i in items}
                try:
                    answer = client.post(f"/subscriptions/{sub_id}:acknowledge", json={"lockTokens": list(tokens)})
                except httpx.HTTPError:
                    stats["cut acknowledges"] += 1
                    cut.update(tokens.values())
                    continue
                if answer.status_code not in (200, 400):
                    violations.append(f"acknowledge answered {answer.status_code}: {answer.text[:200]}")
                    continue
                for t in answer.json()["succeededLockTokens"]:
                    acked[tokens[t]] += 1
                stats["failed tokens"] += len(answer.json()["failedLockTokens"])  # expired before the acknowledge
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failure.append(exc)
        finally:
            client.close()

    producing = threading.Thread(target=producer.run, daemon=True)
    pulling = threading.Thread(target=puller, daemon=True)
    producing.start()
    pulling.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 1.0))  # a seeded random moment for the kill: the scenario
            serve.kill()
            serve.start().wait_ready("/subscriptions")
        # Enough events for the scenario to mean something, however early the (one, quick) kill fell.
        wait_for(lambda: len(producer.mine) > MIN_EVENTS, timeout=120, what=f"more than {MIN_EVENTS} events of {PARTNER}")
        producer.stop_event.set()
        producing.join(60)
        draining.set()
        expected = {f"{spec.name}-{p}-{o}" for p, o in producer.mine}

        seen: dict[str, object] = {}

        def at_end() -> bool:
            sub = store.get(sub_id)
            pos = {p: o for p, (o, _) in store.positions(sub_id).items()}
            seen.update(delivered=sub.delivered, expected=len(expected), positions=pos, ends=dict(producer.ends),
                        stats=dict(stats), violations=violations[:3])
            return sub.delivered >= len(expected) and all(pos.get(p) == end for p, end in producer.ends.items())

        try:
            wait_for(lambda: at_end() or failure, timeout=120, interval=0.2, what="every event acknowledged")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {seen}") from None
        finished.set()
        pulling.join(30)
    finally:
        finished.set()
        producer.stop_event.set()
        serve.stop()
    assert not failure, failure
    sub = store.get(sub_id)
    positions = {p: o for p, (o, _) in store.positions(sub_id).items()}
    metastore.dispose()
    twice = sum(n - 1 for n in acked.values() if n > 1)
    lost = len(expected) - len(set(acked) | (cut & expected))
    record("pull: SIGKILL of flow serve during receive/acknowledge", kills, len(expected), max(lost, 0), twice,
           note=f"{stats['cut receives']} cut receives, {stats['cut acknowledges']} cut acknowledges, "
                f"{stats['redelivered']} redelivered, {stats['left to expire']} left to expire")
    assert not violations, violations[:5]
    assert sub.delivered == len(expected), (sub.delivered, len(expected))  # each acknowledged once, none lost
    assert positions == dict(producer.ends), (positions, dict(producer.ends))
    assert set(acked) | cut >= expected and twice == 0
    assert stats["redelivered"] > 0  # the expired locks did come again
    assert len(expected) > MIN_EVENTS
