"""The sensor's exact probe against the real broker: ends, waiting records, a log shorter than
the committed offset, and the shared topic listing."""

from __future__ import annotations

import time

from confluent_kafka import Consumer

from connectors.kafka import consumer_config
from connectors.kafka.probe import PROBE_CONF, probe_committed, topic_metadata
from examples.demo_data import generate_clicks, produce
from tests.support import read_messages


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(consumer_config(bootstrap, "probe-test", PROBE_CONF))


def _true_ends(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Ends by reading every record (independent of the probe: tests.support.read_messages)."""
    ends = dict.fromkeys(range(partitions), 0)
    for m in read_messages(bootstrap, topic, partitions):
        ends[m.partition()] = m.offset() + 1
    return ends


def test_probe_gives_exact_ends_where_the_hint_lags(kafka_bootstrap, make_topic):
    topic = make_topic(partitions=3)
    produce(kafka_bootstrap, topic, generate_clicks(600, 1, 0.0, seed=1), partitions=3)
    ends = _true_ends(kafka_bootstrap, topic, 3)
    assert sum(ends.values()) == 600

    # At the end: nothing waits, the end is exact.
    c = _consumer(kafka_bootstrap)
    try:
        at_end = probe_committed(c, topic, ends)
    finally:
        c.close()
    assert {p: pr.end for p, pr in at_end.items()} == ends
    assert all(pr.waiting == 0 and pr.oldest_waiting_ms is None for pr in at_end.values())

    # From the start: every record waits, counted exactly, with the oldest one's timestamp.
    c = _consumer(kafka_bootstrap)
    try:
        started = probe_committed(c, topic, dict.fromkeys(range(3), 0))
    finally:
        c.close()
    assert {p: pr.end for p, pr in started.items()} == ends
    assert sum(pr.waiting for pr in started.values()) == 600
    assert all(pr.oldest_waiting_ms and pr.oldest_waiting_ms > 0 for pr in started.values())


def test_probe_proves_a_committed_offset_past_the_end(kafka_bootstrap, make_topic):
    topic = make_topic(partitions=2)
    produce(kafka_bootstrap, topic, generate_clicks(100, 1, 0.0, seed=2), partitions=2)
    ends = _true_ends(kafka_bootstrap, topic, 2)
    past = {0: ends[0] + 500, 1: ends[1]}
    c = _consumer(kafka_bootstrap)
    try:
        started = time.monotonic()
        probes = probe_committed(c, topic, past)
        took = time.monotonic() - started
    finally:
        c.close()
    assert probes[0].end == ends[0] and probes[0].end < probes[0].committed  # the alarm's proof
    assert probes[1].end == ends[1] and probes[1].waiting == 0
    assert took < 4, f"the proof came from the fetch, not the timeout ({took:.1f} s)"


def test_topic_listing_is_shared_and_refreshed_for_a_new_topic(kafka_bootstrap, make_topic):
    first = make_topic(partitions=1)
    c = _consumer(kafka_bootstrap)
    try:
        assert topic_metadata(c, kafka_bootstrap, first) is not None
        second = make_topic(partitions=4)  # created after the listing was cached
        md = topic_metadata(c, kafka_bootstrap, second)
        assert md is not None and len(md.partitions) == 4
        assert topic_metadata(c, kafka_bootstrap, "no-such-topic-probe") is None
    finally:
        c.close()
