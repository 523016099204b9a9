"""A landing whose downstream is slow (the metastore or the lake stalls for longer than the
reader's idle timeout) must not be taken for a silent broker.

The reader fetches ahead while the caller decodes and writes; time the caller spends on a batch
is not broker silence. Here the caller sleeps longer than `idle_timeout_s` after each batch,
with small fetches so the client cannot have everything queued: every record must still be
read, with no KafkaReadError and no false HistoryLostError.
"""

from __future__ import annotations

import time

from connectors.kafka import RangeReader, consumer_config
from examples.demo_data import generate_clicks, produce
from tests.support.reliability_table import record

SMALL = {
    "fetch.max.bytes": 4_096,
    "message.max.bytes": 2_048,
    "max.partition.fetch.bytes": 2_048,
    "queued.max.messages.kbytes": 1,
    "fetch.wait.max.ms": 10,
}


def test_a_slow_caller_is_not_a_stalled_broker(topic, kafka_bootstrap):
    produce(kafka_bootstrap, topic, generate_clicks(400, 1, 0.0, seed=5), partitions=2)
    reader = RangeReader(
        consumer_config(kafka_bootstrap, "slow", SMALL),
        topic,
        {0: 0, 1: 0},
        batch_size=50,
        idle_timeout_s=1.0,
    )
    seen = 0
    for i, batch in enumerate(reader.batches()):
        seen += len(batch)
        if i < 4:
            time.sleep(1.5)  # the metastore or the lake is slow right now
    assert seen == 400
    assert all(r.reached_eof for r in reader.reads.values())
    record(
        "slow downstream vs idle timeout",
        1,
        seen,
        400 - seen,
        0,
        1,
        "4 pauses of 1.5 s > idle timeout 1 s",
    )
