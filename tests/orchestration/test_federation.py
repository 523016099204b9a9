"""Two flowsuite installations federate, with real processes (orchestration/demo/federation.py):
organisation A's gateway pushes p-001's clicks to organisation B's inbound endpoint; mid-stream
A's gateway is SIGKILLed and B's inbound SIGKILLed and restarted. B's lake must hold every event
A sent exactly once, and B's clicks per hour must equal A's partner_engagement for p-001. Then a
puller of p-001 behind a firewall pulls the same events from A: each once, in order per partition."""

from __future__ import annotations

from connectors.flows import land
from connectors.kafka import ensure_topic
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.settings import load_settings
from connectors.spec import load_specs
from examples.demo_data import generate_clicks, produce
from examples.engagement import materialize_hour
from orchestration.demo.federation import run_federation, run_pull
from orchestration.services.broker import running_broker


def test_b_lands_every_event_a_sent_exactly_once_through_kills(tmp_path):
    with running_broker() as broker:  # A's own broker: A's topic is `clicks`, as in the demo
        a = load_settings({"FLOWSUITE_HOME": str(tmp_path / "a"), "FLOWSUITE_KAFKA_BOOTSTRAP": broker.bootstrap})
        a.home.mkdir(parents=True)
        clicks = next(s for s in load_specs(a.products_dir) if s.name == "clicks")
        ensure_topic(broker.bootstrap, clicks.topic, 2)
        produce(broker.bootstrap, clicks.topic, generate_clicks(30_000, 2, 0.01, seed=25), partitions=2)
        metastore, lake = Metastore(a.metastore_url), Lake(a.lake_url)
        try:
            assert land(clicks, lake=lake, metastore=metastore, bootstrap=broker.bootstrap).landed > 29_000
            for hour in sorted({f.hour for f in metastore.live_files(clicks.name)}):
                materialize_hour(lake, metastore, hour, source=clicks.name)
        finally:
            metastore.dispose()

        out = run_federation(a, kill=True, maxbatch=10)
        pulled = run_pull(a, max_events=100)

    assert len(out.expected) > 80, out.lines
    assert out.killed_at is not None and 0 < out.killed_at < len(out.expected), out.lines
    missing = out.expected - set(out.b_lake)
    twice = {i: n for i, n in out.b_lake.items() if n > 1}
    extra = set(out.b_lake) - out.expected
    assert not missing and not twice and not extra, (len(missing), twice, extra)
    assert out.exactly_once and out.landed == len(out.expected)
    assert out.b_topic_records >= len(out.expected)  # copies may reach B's topic; never B's lake
    assert out.counts_equal, out.hour_counts
    assert any("exactly once" in line for line in out.lines), out.lines
    # the same events pulled by a subscriber that hosts no endpoint
    assert pulled.expected == out.expected, pulled.lines
    assert pulled.exactly_once and pulled.receives > len(out.expected) // 100, pulled.lines
    assert any("offset order: yes" in line for line in pulled.lines), pulled.lines
