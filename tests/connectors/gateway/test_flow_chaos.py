"""The gateway under partner chaos (issue 23, DESIGN invariant 6): two gateway processes share
the work of ten partner subscriptions while one of them is SIGKILLed again and again during
delivery, and two receivers misbehave. Audited per subscription by tests/support/flow_chaos.py
against a plain read of the topic: no gap, order per partition, nothing of another partner,
every duplicate explained by a kill and at most one batch of them per kill.

`make test` runs 3 kills (1 in the replay); `make reliability` (FLOWSUITE_RELIABILITY=full) 50.
"""

from __future__ import annotations

import random
import time
import uuid

import yaml

from connectors.flows import land
from connectors.gateway.settings import GatewaySettings
from connectors.kafka import ensure_topic
from connectors.lake import Lake
from connectors.metastore import Metastore
from tests.support.flow_chaos import (
    ClickProducer,
    Gateways,
    PartnerReceiver,
    audit,
    gateway_env,
    read_produced,
)
from tests.support.gateway import clicks_flow_spec, flow_env, produce_history, wait_for
from tests.support.reliability_table import SEED, iterations, record

PARTNERS = tuple(f"p-{n:03d}" for n in range(10))
NOBODY = ("p-010", "p-011")  # produced, subscribed by no one: a leaking filter would show them
MAX_BATCH = GatewaySettings().max_batch  # events per read and per batched request

# how each partner subscribes (config): every delivery mode, one unordered
CONFIGS = {
    "p-000": {}, "p-001": {}, "p-002": {"mode": "structured"}, "p-003": {"mode": "structured"},
    "p-004": {"mode": "batched", "maxbatch": 25}, "p-005": {"mode": "batched", "maxbatch": 7},
    "p-006": {"ordered": False, "maxinflight": 4}, "p-007": {"mode": "batched", "maxbatch": 50},
    "p-008": {}, "p-009": {"mode": "structured"},
}
FAULTS = {"p-008": "503", "p-009": "429"}  # each on a seeded 5% of attempts; 429 with Retry-After: 1


def _write_products(tmp_path, spec):
    products = tmp_path / "products"
    products.mkdir(exist_ok=True)
    (products / "clicks.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return products


def _subscribe_partners(flow, receivers, orgs, **config) -> list[str]:
    ids = []
    for org in orgs:
        flow.tokens[org] = flow.store.create_token(org)
        created = flow.subscribe(org, receivers[org].url, config={"startfrom": "earliest", **CONFIGS[org], **config})
        flow.approve(created["id"])
        ids.append(created["id"])
    return ids


def _accepted_total(receivers) -> int:
    return sum(len(r.accepted) for r in receivers.values())


def _kill_and_restart(gateways: Gateways, rng: random.Random) -> None:
    i = rng.randrange(len(gateways.procs))
    gateways.kill(i)
    time.sleep(rng.uniform(0.0, 1.0))  # sometimes the survivor takes over alone first
    gateways.start(i)


def _audit_all(receivers, produced, gateways, sub_ids, wanted=None):
    """Every subscription's audit, with its own claim losses (from the gateways' logs)."""
    kill_times = [t for t, _ in gateways.kills]
    losses = gateways.claim_losses()
    return [audit(org, r.snapshot(), produced, kill_times, ordered=CONFIGS[org].get("ordered", True), wanted=wanted,
                  losses=[(t, p) for t, s, p, _ in losses if s == sid])
            for (org, r), sid in zip(receivers.items(), sub_ids, strict=True)], losses


def _check(audits, gateways) -> tuple[list[int], int]:
    problems = [p for a in audits for p in a.problems()]
    assert not problems, "\n".join(problems) + f"\nkills (time, gateway): {gateways.kills}"
    per_kill = [sum(a.duplicates_per_kill[k] for a in audits) for k in range(len(gateways.kills))]
    # at-least-once: only what was in flight (sent, not yet committed) when a gateway died
    assert all(d <= MAX_BATCH for d in per_kill), per_kill
    per_loss = [d for a in audits for d in a.duplicates_per_loss]
    assert all(d <= MAX_BATCH for d in per_loss), per_loss
    return per_kill, sum(per_loss)


def test_partner_chaos_two_gateways_sigkilled_while_producing(tmp_path, kafka_bootstrap, make_topic):
    kills = iterations(quick=3)
    rng = random.Random(SEED)
    topic = make_topic(partitions=2)
    began = time.monotonic()
    receivers = {org: PartnerReceiver(org, SEED, fault=FAULTS.get(org)).start() for org in PARTNERS}
    gateways = None
    with flow_env(tmp_path, kafka_bootstrap, topic) as flow:
        sub_ids = _subscribe_partners(flow, receivers, PARTNERS)
        env = gateway_env(tmp_path, _write_products(tmp_path, flow.spec), flow.store.metastore.url, kafka_bootstrap)
        gateways = Gateways(tmp_path, env).start_all()
        producer = ClickProducer(kafka_bootstrap, topic, PARTNERS + NOBODY, chunk=12, pause_s=0.1)
        producer.start()
        try:
            sharing: set[str] = set()
            for k in range(kills):
                sharing = gateways.wait_sharing(flow.store.metastore, sub_ids, sharing)
                seen = _accepted_total(receivers)
                wait_for(lambda s=seen: _accepted_total(receivers) >= s + rng.randint(30, 200), timeout=90,
                         what=f"deliveries before kill {k + 1}")
                _kill_and_restart(gateways, rng)
            total = producer.finish()
            produced_in = time.monotonic() - began
            produced = read_produced(kafka_bootstrap, topic)
            assert len(produced) == total
            want = {org: {p.event_id for p in produced if p.partner == org} for org in PARTNERS}
            wait_for(lambda: all(want[o] <= r.accepted_ids() for o, r in receivers.items()), timeout=180,
                     what="every partner's events after the kills")
            assert gateways.alive(), gateways.logs_tail()
        finally:
            producer.halt.set()
            gateways.stop()
            for r in receivers.values():
                r.stop()
    audits, losses = _audit_all(receivers, produced, gateways, sub_ids)
    per_kill, after_losses = _check(audits, gateways)
    faults = {org: receivers[org].faults for org in FAULTS}
    assert all(faults.values()), faults  # the misbehaving receivers did misbehave
    delivered = sum(a.accepted for a in audits)
    took = time.monotonic() - began
    print(f"flow chaos: kills={kills} events={total} (to subscribers {sum(a.expected for a in audits)}) "
          f"accepted={delivered} dups per kill={per_kill} claim losses without a kill={len(losses)} "
          f"(dups after them {after_losses}) faults={faults} in {took:.0f} s "
          f"(producing and killing {produced_in:.0f} s)")
    record("flow chaos: 2 gateways, 10 partners, SIGKILL while producing", kills, total, lost=0,
           duplicated=sum(per_kill) + after_losses,
           note=f"dups per kill max {max(per_kill)} (bound {MAX_BATCH}); {len(losses)} claims lost to a missed "
                f"heartbeat ({after_losses} dups); "
                                          f"503/429 answered {faults['p-008']}/{faults['p-009']} times; {took:.0f} s")


REPLAYERS = ("p-001", "p-002", "p-004")  # binary, structured, batched (maxbatch 25)


def test_replay_from_the_lake_into_kafka_with_gateway_kills(tmp_path, broker):
    """The broker lost each partition's offsets below `low` after the lake landed them. Three
    partners subscribe from `earliest` (the lake reaches back to 0): two gateways deliver
    0..low-1 from the lake's files, then Kafka, and are SIGKILLed on the way — the first kill
    while the lake part is being delivered. Audited like the chaos test against the records read
    from the topic before the truncation (and from `low` after).

    No clicks are produced meanwhile: with a producer appending small batches after the
    truncation, the S3-backed test broker stopped serving fetches from `low` (a plain consumer
    with the feed's settings read nothing in 8 s, watermarks (1000, 1695)); reported, not
    worked around in the engine."""
    kills = iterations(quick=1)
    rng = random.Random(SEED + 1)
    began = time.monotonic()
    per_partition = 1500 + 300 * (kills - 1)
    low = (per_partition * 2 // 3) // 50 * 50  # a batch boundary (flushed every 50 per partition)
    topic = f"test.chaos.replay.{uuid.uuid4().hex[:8]}"
    ensure_topic(broker.bootstrap, topic, 2)
    spec = clicks_flow_spec(topic)
    produce_history(broker.bootstrap, topic, 2 * per_partition, chunk=50)  # p-000..p-004, ~1 in 40 quarantined
    history = [p for p in read_produced(broker.bootstrap, topic) if p.offset < low]
    ms = Metastore(f"sqlite:///{tmp_path / 'metastore.db'}")  # the one flow_env opens below
    lake, runs_of = Lake(str(tmp_path / "lake")), max(1000, per_partition // 10)
    for run in range(4 * per_partition // runs_of + 2):  # land_all, with room for the S3 broker under load
        if land(spec, lake=lake, metastore=ms, bootstrap=broker.bootstrap, run_id=f"run-{run}", max_records=runs_of,
                idle_timeout_s=15, batch_size=runs_of).consumed == 0:
            break
    assert {p: o.next_offset for p, o in ms.committed_offsets(spec.name).items()} == {0: per_partition, 1: per_partition}
    ms.dispose()
    assert broker.truncate(topic, {0: low, 1: low}) == {0: low, 1: low}
    landed_in = time.monotonic() - began
    in_lake = sum(1 for p in history if p.partner in REPLAYERS)  # what the lake part delivers
    receivers = {org: PartnerReceiver(org, SEED, delay_s=0.01).start() for org in REPLAYERS}
    lake_kills = 0
    with flow_env(tmp_path, broker.bootstrap, topic) as flow:
        sub_ids = _subscribe_partners(flow, receivers, REPLAYERS)
        for sid in sub_ids:  # from 0: the lake's part, not the broker's low watermark
            assert flow.store.positions(sid) == {0: (0, None), 1: (0, None)}
        env = gateway_env(tmp_path, _write_products(tmp_path, flow.spec), flow.store.metastore.url, broker.bootstrap)
        gateways = Gateways(tmp_path, env).start_all()
        tail = read_produced(broker.bootstrap, topic, start=low)  # what Kafka still holds
        produced = history + tail
        want = {org: {p.event_id for p in produced if p.partner == org} for org in REPLAYERS}
        everything = sum(len(w) for w in want.values())
        # kill points by deliveries accepted: the first in the lake part's first half, the rest anywhere
        points = sorted([rng.randint(10, in_lake // 2), *(rng.randint(10, everything - 10) for _ in range(kills - 1))])
        try:
            sharing: set[str] = set()
            for point in points:
                sharing = gateways.wait_sharing(flow.store.metastore, sub_ids, sharing)
                wait_for(lambda p=point: _accepted_total(receivers) >= p, timeout=90, what=f"{point} deliveries")
                heads = [max((a.sequence for a in r.snapshot() if a.partition == p), default=-1)
                         for r in receivers.values() for p in (0, 1)]
                lake_kills += any(h < low - 1 for h in heads)  # some partition still in the lake part
                _kill_and_restart(gateways, rng)
            try:
                wait_for(lambda: all(want[o] <= r.accepted_ids() for o, r in receivers.items()), timeout=120,
                         what="every partner's events from the lake and Kafka")
            except AssertionError as exc:
                positions = {org: flow.store.positions(sid) for org, sid in zip(REPLAYERS, sub_ids, strict=True)}
                raise AssertionError(f"{exc}; positions {positions}, kills {gateways.kills}\n"
                                     f"{gateways.logs_tail(60)}") from None
            assert gateways.alive(), gateways.logs_tail()
        finally:
            gateways.stop()
            for r in receivers.values():
                r.stop()
    assert lake_kills >= 1, "no kill landed while the lake part was being delivered"
    audits, losses = _audit_all(receivers, produced, gateways, sub_ids)
    per_kill, after_losses = _check(audits, gateways)
    from_lake = sum(1 for r in receivers.values() for a in r.snapshot() if a.sequence < low)
    assert from_lake >= in_lake  # the part the broker no longer holds came (from the lake)
    took = time.monotonic() - began
    total = 2 * per_partition
    print(f"flow replay chaos: kills={kills} ({lake_kills} in the lake part) events={total} (low {low} of "
          f"{per_partition} per partition); to subscribers {sum(a.expected for a in audits)}, {in_lake} "
          f"from the lake; dups per kill={per_kill}; claim losses without a kill={len(losses)} (dups {after_losses}); "
          f"in {took:.0f} s (landing and truncation {landed_in:.0f} s)")
    record("flow chaos: replay lake -> Kafka, SIGKILL", kills, total, lost=0, duplicated=sum(per_kill) + after_losses,
           note=f"{lake_kills} kill(s) in the lake part; dups per kill max {max(per_kill)} (bound {MAX_BATCH}); "
                f"{took:.0f} s")
