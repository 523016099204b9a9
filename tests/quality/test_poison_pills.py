"""Poison pills through the real broker: the run succeeds and every bad record is accounted for.

consumed = landed + quarantined, and each quarantined row carries its reason and the exact
bytes that were produced.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pyarrow.compute as pc
import yaml
from confluent_kafka import Producer

from connectors.flows import land
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.settings import REPO_ROOT
from connectors.spec import DataProductSpec

CLICKS = yaml.safe_load((REPO_ROOT / "dataproducts" / "clicks.yaml").read_text())


def spec_for(topic: str, name: str = "pills", **quality) -> DataProductSpec:
    data = copy.deepcopy(CLICKS)
    data.update(name=name, topic=topic, quality={"on_invalid": "quarantine", **quality})
    return DataProductSpec.model_validate(data)


def click(i: int, **over) -> dict:
    rec = {
        "event_id": f"e-{i}", "user_id": f"u-{i % 7}", "partner_id": "p-001", "ad_id": "ad-1",
        "kind": "click", "cost_micros": 1500, "event_time": datetime.now(UTC).isoformat(),
    }
    rec.update(over)
    return rec


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    errors: list = []
    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "message.max.bytes": 8 * 1024 * 1024,
    })
    for key, value in records:
        producer.produce(topic, value=value, key=key, partition=0,
                         on_delivery=lambda err, _m: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors, errors


def test_poison_pills_are_quarantined_with_reason_and_original_bytes(kafka_bootstrap, make_topic, tmp_path):
    topic = make_topic(partitions=1)
    spec = spec_for(topic)
    good = [(f"e-{i}".encode(), json.dumps(click(i)).encode()) for i in range(50)]
    pills = {
        "malformed JSON": b'{"event_id": "x1", "user_id": ',
        "wrong types": json.dumps(click(100, cost_micros="lots")).encode(),
        "missing required": json.dumps({k: v for k, v in click(101).items() if k != "user_id"}).encode(),
        "not UTF-8": json.dumps(click(102)).encode().replace(b'"u-', b'"\xff\xfe-', 1),
        "2 MB value": json.dumps(click(103, user_id="u" * (2 * 1024 * 1024))).encode(),
        "empty value": b"",
        "deeply nested": b"[" * 100_000,
        "tombstone": None,
        "out of range": json.dumps(click(104, cost_micros=-5)).encode(),
        "JSON array": b"[1, 2, 3]",
    }
    records = good[:25] + [(f"bad-{i}".encode(), v) for i, v in enumerate(pills.values())] + good[25:]
    produce(kafka_bootstrap, topic, records)

    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'm.db'}")
    result = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=10)

    assert result.consumed == len(records)
    assert result.consumed == result.landed + result.quarantined
    assert result.landed == 50
    assert result.quarantined == len(pills)
    q = lake.read_tables(f.path for f in metastore.live_files(spec.name, kinds=("quarantine",)))
    assert q.num_rows == len(pills)
    by_offset = {r["_offset"]: r for r in q.to_pylist()}
    for offset, (name, value) in enumerate(pills.items(), start=25):
        row = by_offset[offset]
        assert row["_raw"] == value, name  # byte for byte, None for the tombstone
        assert row["_error"], name
        assert row["_key"] == f"bad-{offset - 25}"
    reasons = {name: by_offset[o]["_error"] for o, name in enumerate(pills, start=25)}
    assert "malformed JSON" in reasons["malformed JSON"]
    assert "cost_micros" in reasons["wrong types"]
    assert "missing required field 'user_id'" in reasons["missing required"]
    assert "UTF-8" in reasons["not UTF-8"]
    assert "above max_length 64" in reasons["2 MB value"]
    assert reasons["empty value"] == "value is empty"
    assert "JSON" in reasons["deeply nested"]
    assert "tombstone" in reasons["tombstone"]
    assert "below min" in reasons["out of range"]
    assert "array" in reasons["JSON array"]
    landed = lake.read_tables(result.files)
    assert sorted(landed.column("event_id").to_pylist()) == sorted(f"e-{i}" for i in range(50))
    assert pc.max(landed.column("_offset")).as_py() == len(records) - 1


def test_non_utf8_value_in_a_clean_batch_is_quarantined():
    from connectors.formats import Batch, Decoder

    spec = spec_for("t")
    values = [json.dumps(click(i)).encode() for i in range(200)]
    values[50] = values[50].replace(b'"u-', b'"\xff\xfe\xc3', 1)
    decoded = Decoder(spec).decode(Batch(0, values, [None] * 200, list(range(200)), [0] * 200))
    assert decoded.invalid.column("_offset").to_pylist() == [50]
