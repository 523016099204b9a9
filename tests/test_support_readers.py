"""The shared topic reader of tests/support: it reads every partition to its end, or fails naming
what it waited for — a reader that returned short would let a test pass on records it never saw."""

from __future__ import annotations

import pytest

from examples.demo_data import generate_clicks, produce
from tests.support import read_messages, read_topic


def test_read_messages_reads_every_partition_to_its_end(kafka_bootstrap, make_topic):
    topic = make_topic(partitions=2)
    report = produce(kafka_bootstrap, topic, generate_clicks(50, 1, 0.0, seed=5), partitions=2)
    messages = read_messages(kafka_bootstrap, topic)  # partitions found from the topic's metadata
    assert len(messages) == report.produced == 50
    per_partition = {p: sum(1 for m in messages if m.partition() == p) for p in (0, 1)}
    assert per_partition == report.per_partition
    assert set(read_topic(kafka_bootstrap, topic, 2)) == {(m.partition(), m.offset()) for m in messages}


def test_read_messages_fails_naming_the_partition_that_never_ends(kafka_bootstrap, make_topic):
    topic = make_topic(partitions=2)
    with pytest.raises(AssertionError) as waited:
        read_messages(kafka_bootstrap, topic, partitions=3, timeout=2)  # partition 2 does not exist
    message = str(waited.value)
    assert f"the end of every partition of {topic}" in message
    assert "partitions [2] never reached their end" in message


def test_read_messages_from_an_offset_reads_each_partition_from_there(kafka_bootstrap, make_topic):
    topic = make_topic(partitions=2)
    report = produce(kafka_bootstrap, topic, generate_clicks(40, 1, 0.0, seed=6), partitions=2)
    tail = read_messages(kafka_bootstrap, topic, 2, start=5)
    assert sorted((m.partition(), m.offset()) for m in tail) == sorted(
        (p, o) for p, n in report.per_partition.items() for o in range(5, n))
