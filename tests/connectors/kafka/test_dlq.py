"""on_invalid modes through the real broker: dlq publishes before the commit; fail commits nothing."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest
import yaml
from confluent_kafka import Producer

from connectors.flows import InvalidRecordsError, land
from connectors.kafka import DeadLetterError, dlq_publisher, dlq_topic, topic_partitions
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.settings import REPO_ROOT
from connectors.spec import DataProductSpec
from tests.support import read_messages

CLICKS = yaml.safe_load((REPO_ROOT / "dataproducts" / "clicks.yaml").read_text())


def spec_for(topic: str, on_invalid: str) -> DataProductSpec:
    data = copy.deepcopy(CLICKS)
    data.update(name="dlqclicks", topic=topic, quality={"on_invalid": on_invalid})
    return DataProductSpec.model_validate(data)


def click(i: int, **over) -> bytes:
    rec = {"event_id": f"e-{i}", "user_id": "u", "partner_id": "p-001", "ad_id": "a", "kind": "click",
           "cost_micros": 10, "event_time": datetime.now(UTC).isoformat()}
    rec.update(over)
    return json.dumps(rec).encode()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, int]]) -> None:
    errors: list = []
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for key, value, partition in records:
        p.produce(topic, value=value, key=key, partition=partition,
                  on_delivery=lambda err, _m: errors.append(err) if err else None)
    assert p.flush(30) == 0 and not errors


@pytest.fixture
def stores(tmp_path):
    return Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'm.db'}")


BAD = [
    (b"k-bad-1", b"{not json", 0),
    (b"k-bad-2", click(90, cost_micros=-1), 1),
    (b"\xff\x00binary-key", click(91, kind="swipe"), 1),
]


def test_dlq_mode_publishes_each_quarantined_record_with_origin_headers(kafka_bootstrap, make_topic, stores):
    topic = make_topic(partitions=2)
    spec = spec_for(topic, "dlq")
    lake, metastore = stores
    produce(kafka_bootstrap, topic, [(f"k{i}".encode(), click(i), i % 2) for i in range(20)] + BAD)
    assert dlq_publisher(spec_for(topic, "quarantine"), kafka_bootstrap) is None
    publisher = dlq_publisher(spec, kafka_bootstrap)
    result = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, on_invalid=publisher,
                  idle_timeout_s=10)
    assert (result.landed, result.quarantined) == (20, 3)
    assert publisher.published == 3

    messages = read_messages(kafka_bootstrap, dlq_topic(spec))
    assert len(messages) == 3
    assert topic_partitions(kafka_bootstrap, dlq_topic(spec)) == [0, 1]
    by_value = {m.value(): m for m in messages}
    for key, value, partition in BAD:
        m = by_value[value]  # the original bytes
        assert m.key() == key  # the original key, even when it is not UTF-8
        assert m.partition() == partition
        headers = {k: v.decode() for k, v in m.headers()}
        assert headers["flowsuite.topic"] == topic
        assert headers["flowsuite.partition"] == str(partition)
        assert headers["flowsuite.product"] == spec.name
        assert headers["flowsuite.error"]
        assert headers["flowsuite.id"] == f"{topic}:{partition}:{headers['flowsuite.offset']}"
    errors = {m.value(): dict(m.headers())["flowsuite.error"].decode() for m in messages}
    assert "malformed JSON" in errors[b"{not json"]
    assert "below min" in errors[BAD[1][1]]
    # The quarantine still holds them too: the DLQ is in addition, not instead.
    assert len(metastore.live_files(spec.name, kinds=("quarantine",))) == 2


def test_dlq_delivery_failure_fails_the_landing_and_commits_nothing(kafka_bootstrap, make_topic, stores):
    topic = make_topic(partitions=1)
    spec = spec_for(topic, "dlq")
    lake, metastore = stores
    produce(kafka_bootstrap, topic, [(b"k1", click(1), 0), (b"k2", b"x" * 5000, 0)])
    # The producer refuses records above its limit: the publish cannot be confirmed.
    publisher = dlq_publisher(spec, kafka_bootstrap, {"message.max.bytes": 2000})
    with pytest.raises(DeadLetterError, match="not delivered"):
        land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, on_invalid=publisher,
             idle_timeout_s=10)
    assert metastore.committed_offsets(spec.name) == {}
    assert metastore.live_files(spec.name, kinds=("landed", "quarantine")) == []
    assert metastore.files_in_states(spec.name, ["pending"]) == []
    assert not [p for p in lake.list_tree(spec.name) + lake.list_tree("_quarantine") if p.endswith(".parquet")]


def test_fail_mode_fails_the_run_and_commits_nothing(kafka_bootstrap, make_topic, stores, tmp_path):
    topic = make_topic(partitions=1)
    spec = spec_for(topic, "fail")
    lake, metastore = stores
    produce(kafka_bootstrap, topic, [(f"k{i}".encode(), click(i), 0) for i in range(10)] + [(b"b", b"{", 0)])
    with pytest.raises(InvalidRecordsError, match="on_invalid is 'fail'"):
        land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=10)
    assert metastore.committed_offsets(spec.name) == {}
    assert metastore.live_files(spec.name, kinds=("landed", "quarantine")) == []
    assert not list((tmp_path / "lake").rglob("*.parquet"))


def test_quarantine_mode_lands_the_rest(kafka_bootstrap, make_topic, stores):
    topic = make_topic(partitions=1)
    spec = spec_for(topic, "quarantine")
    lake, metastore = stores
    produce(kafka_bootstrap, topic, [(f"k{i}".encode(), click(i), 0) for i in range(10)] + [(b"b", b"{", 0)])
    result = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=10)
    assert (result.consumed, result.landed, result.quarantined) == (11, 10, 1)
    assert metastore.committed_offsets(spec.name)[0].next_offset == 11
