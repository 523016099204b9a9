"""RangeReader at the edges of a range: a cap that cuts a batch which also carries the
partition's end-of-partition event must not be reported as having reached the end."""

from __future__ import annotations

import time

from confluent_kafka import Consumer

from connectors.kafka import RangeReader, consumer_config
from examples.demo_data import generate_clicks, produce


class _LateConsumer:
    """A real consumer whose first consume() waits, so librdkafka has fetched the whole
    partition and its EOF event by then, and one call returns them together."""

    def __init__(self, conf):
        self._consumer = Consumer(conf)
        self._waited = False

    def consume(self, *args, **kwargs):
        if not self._waited:
            time.sleep(1.5)  # the scenario: a caller late to consume (no signal says the fetch is whole)
            self._waited = True
        return self._consumer.consume(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._consumer, name)


def _read(reader: RangeReader, conf) -> list[int]:
    consumer = _LateConsumer(conf)
    try:
        return [o for batch in reader._read(consumer) for o in batch.offsets]
    finally:
        consumer.close()


def test_a_cap_inside_a_batch_that_ends_with_eof_is_not_the_end(make_topic, kafka_bootstrap):
    topic = make_topic(partitions=1)
    produce(kafka_bootstrap, topic, generate_clicks(1_000, 1, 0.0, seed=5), partitions=1)
    conf = consumer_config(kafka_bootstrap, "test-reader")
    capped = RangeReader(conf, topic, {0: 0}, max_records={0: 300})
    assert _read(capped, conf) == list(range(300))
    assert capped.reads[0].end == 300 and not capped.reads[0].reached_eof

    rest = RangeReader(conf, topic, {0: 300})
    assert _read(rest, conf) == list(range(300, 1_000))
    assert rest.reads[0].end == 1_000 and rest.reads[0].reached_eof
