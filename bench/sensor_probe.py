"""Prototype of a cheaper exact sensor probe (bench only; the engine gets it in phase B).

Today's tick asks ListOffsets for every partition (one round trip each), then, because Tansu's
answer lags the true end for batched produce, fetches every partition whose hint is below the
committed offset — which on Tansu is every partition on every idle tick — with a consumer
whose fetch waits up to `fetch.wait.max.ms` and a consume loop that waits its full timeout.

The proof here is the same fetch, done once for all partitions and nothing else: assign every
partition at its committed offset and read one event each —
- partition EOF at the committed offset: the end is exactly the committed offset (nothing waits);
- a record: records wait; the fetch response that carried it set the exact high watermark
  (cached by the client), and its timestamp is the oldest waiting one;
- neither, but the high watermark of the fetch response is below the committed offset: the
  partition's log ends before it — the history-lost alarm, proven by the broker's own fetch.
No ListOffsets at all (except the low watermark of a partition never landed), one fetch round
trip for all partitions, `consume(num_messages=len(pending))` so the loop returns as soon as
every partition answered. The consumer is fresh per tick, so every cached watermark it reads
comes from this tick's fetch (a pooled consumer could hold a stale one and raise a false alarm).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import dagster as dg
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from connectors.kafka import HistoryLostError, PartitionProbe, consumer_config
from sensors.offsets import IN_FLIGHT, START_OFFSETS_TAG, _duration, _ended, _read_cursor, offset_run_key

PROBE_CONF = {
    "fetch.wait.max.ms": 10,  # an idle partition answers at once, not after 100 ms
    # One record per partition is all a probe reads: fetch little and prefetch nothing more
    # (the broker still returns a whole first batch, whatever its size: KIP-74).
    "max.partition.fetch.bytes": 1024,
    "queued.min.messages": 1,
}
METADATA_MAX_AGE_S = 30.0
_metadata: dict[str, tuple[float, dict[str, Any]]] = {}  # bootstrap -> (when, topics)
_lock = threading.Lock()


def topic_metadata(consumer: Consumer, bootstrap: str, topic: str):
    """The topic's metadata from one cluster listing shared by every product's tick in this
    process (Tansu answers a listing in 10-80 ms; 100 products need not each ask). A topic not
    in a listing, or a listing older than METADATA_MAX_AGE_S, asks again."""
    with _lock:
        cached = _metadata.get(bootstrap)
    now = time.monotonic()
    if cached and now - cached[0] < METADATA_MAX_AGE_S and topic in cached[1]:
        return cached[1][topic]
    topics = consumer.list_topics(timeout=10).topics  # never by name: Tansu would create it
    with _lock:
        _metadata[bootstrap] = (time.monotonic(), topics)
    return topics.get(topic)


def probe_exact(consumer: Consumer, topic: str, committed: Mapping[int, int],
                timeout: float = 5.0) -> dict[int, PartitionProbe]:
    """Exact end and oldest waiting record of every partition by one fetch from `committed`."""
    pending = dict(committed)
    exact: dict[int, int] = {}
    oldest: dict[int, int] = {}
    if pending:
        consumer.assign([TopicPartition(topic, p, c) for p, c in pending.items()])
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=len(pending), timeout=0.05):
            p = msg.partition()
            if msg.topic() != topic or p not in pending:
                continue
            err = msg.error()
            if err is None:
                oldest[p] = msg.timestamp()[1]
                exact[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1]
            elif err.code() == KafkaError._PARTITION_EOF:
                exact[p] = msg.offset()
            else:
                continue
            del pending[p]
            consumer.pause([TopicPartition(topic, p)])  # answered: fetch no more of it
        for p, c in list(pending.items()):  # answered with nothing: is the log shorter than c?
            high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1]
            if 0 <= high < c:
                exact[p] = high
                del pending[p]
    hints = {}
    for p in pending:  # the broker did not answer in time: fall back to ListOffsets' hint
        hints[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)[1]
    return {p: PartitionProbe(p, c, exact.get(p, hints.get(p, -1)), exact.get(p), oldest.get(p))
            for p, c in committed.items()}


def evaluate_offsets_probe(spec, job_name: str, context: dg.SensorEvaluationContext, flowsuite: Any):
    """`sensors.offsets.evaluate_offsets` with `probe_exact` as its proof (same decisions)."""
    cursor = _read_cursor(context.cursor)
    in_flight = context.instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1)
    if in_flight:
        return dg.SkipReason(f"a landing run is in progress: {in_flight[0].dagster_run.run_id}")
    states = flowsuite.metastore().committed_offsets(spec.name)
    conf = consumer_config(flowsuite.kafka_bootstrap, spec.consumer_group, {**flowsuite.kafka(), **PROBE_CONF})
    consumer = Consumer(conf)
    try:
        try:
            topic_md = topic_metadata(consumer, flowsuite.kafka_bootstrap, spec.topic)
        except KafkaException as exc:
            return dg.SkipReason(f"the Kafka broker does not answer: {exc}")
        if topic_md is None or topic_md.error is not None:
            return dg.SkipReason(f"topic {spec.topic!r} not found on the broker")
        committed: dict[int, int] = {}
        for p in sorted(topic_md.partitions):
            if p in states:
                committed[p] = states[p].next_offset
            else:
                low, _ = consumer.get_watermark_offsets(TopicPartition(spec.topic, p), timeout=5, cached=False)
                committed[p] = max(low, 0)
        probes = probe_exact(consumer, spec.topic, committed)
        for p, pr in sorted(probes.items()):
            if pr.end is not None and pr.end < pr.committed:
                low, _ = consumer.get_watermark_offsets(TopicPartition(spec.topic, p), timeout=5, cached=False)
                raise HistoryLostError(spec.topic, p, pr.committed, max(low, 0), pr.end)
    finally:
        consumer.close()
    behind = [p for p, s in states.items() if p in committed and not s.at_eof]
    waiting = sum(pr.waiting for pr in probes.values())
    unmeasured = [p for p in behind if probes[p].end is None]
    waiting_partitions = [p for p, pr in probes.items() if pr.waiting > 0 or p in unmeasured]
    oldest_ms = [pr.oldest_waiting_ms for pr in probes.values() if pr.oldest_waiting_ms is not None]
    oldest_age_s = max(0.0, time.time() - min(oldest_ms) / 1000) if oldest_ms else None
    min_records = spec.trigger.min_records
    max_latency_s = spec.trigger.max_latency.total_seconds()
    tick = {"at": time.time(), "waiting": waiting, "oldest_age_s": oldest_age_s, "committed": committed}
    if not waiting_partitions:
        cursor["last_tick"] = tick
        return dg.SensorResult(skip_reason=f"no records waiting in {spec.topic}", cursor=json.dumps(cursor))
    due_by_count = waiting >= min_records
    due_by_age = oldest_age_s is not None and oldest_age_s >= max_latency_s
    if not (due_by_count or due_by_age or unmeasured):
        cursor["last_tick"] = tick
        return dg.SensorResult(skip_reason=f"{waiting} records waiting (< min_records {min_records}), oldest "
                               f"{_duration(oldest_age_s)}", cursor=json.dumps(cursor))
    base_key = offset_run_key(spec.name, committed)
    retry = int(cursor.get("retries", {}).get(base_key, 0))
    key = offset_run_key(spec.name, committed, retry)
    if _ended(context.instance, key):
        retry += 1
        key = offset_run_key(spec.name, committed, retry)
    request = dg.RunRequest(run_key=key, tags={START_OFFSETS_TAG: json.dumps({str(p): o for p, o in committed.items()}),
                                               "flowsuite/product": spec.name})
    new_cursor = {"last_key": key, "starts": {str(p): o for p, o in committed.items()},
                  "retries": {base_key: retry} if retry else {}, "last_tick": tick}
    return dg.SensorResult(run_requests=[request], cursor=json.dumps(new_cursor))
