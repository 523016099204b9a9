"""Inbound flow under SIGKILL: a sender keeps pushing signed batches to a real `flowsuite flow
serve` process while that process is SIGKILLed at seeded random moments and started again.

The sender does what a sending gateway does: every request gets its own webhook-id and is
retried until it is answered 2xx; after a failure it sometimes re-cuts what was not
acknowledged into a new batch (a new webhook-id: what a restarted sender does), so both
de-duplication layers are exercised — the inbound log for a retried webhook-id, the product's
ce_id de-duplication for events that reached the topic twice. The judge: the product's lake
holds exactly the events sent, each once (iterations: FLOWSUITE_RELIABILITY, 3 in make test).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from connectors.flows import land
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.settings import load_settings
from connectors.spec import load_specs
from orchestration.demo.federation import B_PRODUCTS_DIR, Serve, settings_env
from orchestration.services.broker import free_port
from tests.support import wait_for
from tests.support.inbound import (
    ORIGIN,
    SECRET_ENV,
    Sender,
    click,
    lake_ce_ids,
    new_secret,
    structured,
)
from tests.support.reliability_table import SEED, iterations, record


def _products_dir(tmp_path: Path, topic: str) -> Path:
    folder = tmp_path / "products"
    folder.mkdir()
    text = (B_PRODUCTS_DIR / "ads_clicks.yaml").read_text().replace("topic: ads_clicks", f"topic: {topic}")
    (folder / "ads_clicks.yaml").write_text(text)
    return folder


def _event(i: int) -> dict:
    """A click as ads_clicks.yaml declares it (every required field)."""
    data = {**click(i), "user_id": f"u{i % 97}", "ad_id": f"ad-{i % 13}", "cost_micros": 1000 + i}
    return structured(i, data=data)


def test_sigkilled_inbound_lands_what_the_sender_sent_exactly_once(tmp_path, kafka_bootstrap, make_topic):
    kills = iterations(quick=1, full=50)
    rng = random.Random(SEED + 25)
    topic = make_topic(partitions=2)
    b = load_settings({"FLOWSUITE_HOME": str(tmp_path / "b"), "FLOWSUITE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                       "FLOWSUITE_PRODUCTS_DIR": str(_products_dir(tmp_path, topic))})
    b.home.mkdir(parents=True)
    secret = new_secret()
    serve = Serve("inbound", {**settings_env(b), SECRET_ENV: secret}, free_port(), b.home / "inbound.log", deliver=False)
    serve.start().wait_ready("/inbound/ads_clicks")

    sent: list[str] = []  # ce_ids acknowledged with a 2xx
    stats = Counter()
    done = threading.Event()
    failure: list[BaseException] = []

    def sender() -> None:
        client = Sender(serve.url, secret, origin=ORIGIN, client=httpx.Client(timeout=5, trust_env=False))
        srng = random.Random(SEED + 26)
        next_id, pending, request = 0, [], 0
        try:
            while not done.is_set() or pending:
                if not pending:
                    size = srng.randint(1, 40)
                    pending = [_event(i) for i in range(next_id, next_id + size)]
                    next_id += size
                    request += 1
                msg_id = f"req-{request}"
                while True:
                    try:
                        resp = client.batch(pending, msg_id)
                        if 200 <= resp.status_code < 300:
                            stats["duplicate answers"] += bool(resp.json().get("duplicate"))
                            sent.extend(e["id"] for e in pending)
                            pending = []
                            break
                        assert resp.status_code in (502, 503), resp.text
                    except httpx.HTTPError:
                        pass
                    stats["failed attempts"] += 1
                    time.sleep(0.05)  # a sender's back-off before it retries (the server may be down)
                    if srng.random() < 0.3:  # re-cut: a new webhook-id for what is not acknowledged
                        more = srng.randint(0, 10)
                        pending += [_event(i) for i in range(next_id, next_id + more)]
                        next_id += more
                        request += 1
                        msg_id = f"req-{request}"
                        stats["re-cut batches"] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failure.append(exc)

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 1.2))  # a seeded random moment for the kill: the scenario
            serve.kill()
            serve.start().wait_ready("/inbound/ads_clicks")
        accepted = len(sent)
        wait_for(lambda: len(sent) > accepted or failure, 60, what="a batch accepted by the last restarted server")
        done.set()
        thread.join(120)
        assert not thread.is_alive(), "the sender did not finish"
        assert not failure, failure
    finally:
        done.set()
        serve.stop()

    spec = next(iter(load_specs(b.products_dir)))
    metastore = Metastore(b.metastore_url)
    try:
        result = land(spec, lake=Lake(b.lake_url), metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=10)
        landed = lake_ce_ids(Lake(b.lake_url), metastore, spec.name)
    finally:
        metastore.dispose()
    expected = Counter(sent)
    assert all(n == 1 for n in expected.values())  # the sender never reuses an id for another event
    lost = len(set(expected) - set(landed))
    duplicated = sum(n - 1 for n in landed.values() if n > 1)
    extra = set(landed) - set(expected)
    record("inbound: SIGKILL of flow serve while a sender retries", kills, len(expected), lost, duplicated,
           note=f"{stats['failed attempts']} failed attempts, {stats['re-cut batches']} re-cut, "
                f"{result.quarantined} copies dropped by ce_id")
    reasons = _quarantine_reasons(b, spec.name)
    assert all("duplicate ce_id" in r for r in reasons), reasons[:3]  # nothing else was quarantined
    assert stats["failed attempts"] > 0  # the kills did hit requests
    assert lost == 0 and duplicated == 0 and not extra, (lost, duplicated, sorted(extra)[:5])
    assert result.landed == len(expected)


def _quarantine_reasons(b, product: str) -> list[str]:
    metastore = Metastore(b.metastore_url)
    try:
        files = metastore.live_files(product, kinds=("quarantine",))
        if not files:
            return []
        return Lake(b.lake_url).read_tables([f.path for f in files], columns=["_error"]).column("_error").to_pylist()
    finally:
        metastore.dispose()
