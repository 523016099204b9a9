"""CloudEvents through the real broker and the landing engine: binary and structured mode
decode to the same rows, ce_* attributes become columns, ce_time picks the hour, malformed
envelopes are quarantined with a reason, a binary event without data is a tombstone, and
de-duplication on ce_id holds within a run and across runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer

from connectors.flows import land
from connectors.formats import binary_headers, cloudevent_id, to_structured_value
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec

T0 = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)  # the events' time: not the Kafka timestamp


def ce_spec(topic: str, **over) -> DataProductSpec:
    data = {
        "name": "orders", "owner": "team:shop", "topic": topic, "format": "cloudevents", "key": "order_id",
        "fields": [{"name": "order_id", "type": "string", "required": True},
                   {"name": "amount", "type": "int64", "required": True, "min": 0}],
        "event_time": {"source": "ce_time"},
        "partitioning": {"start": "2026-01-01T00:00:00Z"},
        "cloudevents": {"dedupe_on_id": True},
    }
    data.update(over)
    return DataProductSpec.model_validate(data)


def send(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None, list]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "partitioner": "murmur2_random"})
    for key, value, headers in messages:
        producer.produce(topic, value, key, headers=headers)
    assert producer.flush(30) == 0


def event(i: int, minutes: int = 0) -> tuple[dict, dict]:
    order = {"order_id": f"o-{i}", "amount": i * 10}
    attrs = {"id": cloudevent_id("orders", f"o-{i}", 1), "source": "/shop/orders", "type": "shop.order.created",
             "time": T0 + timedelta(minutes=minutes), "subject": f"o-{i}"}
    return attrs, order


def binary(attrs: dict, data: dict | None) -> tuple[bytes, bytes | None, list]:
    headers = binary_headers(**attrs)
    return attrs["subject"].encode(), None if data is None else json.dumps(data).encode(), headers


def structured(attrs: dict, data: dict) -> tuple[bytes, bytes, list]:
    value = to_structured_value({"specversion": "1.0", **attrs, "datacontenttype": "application/json"}, json.dumps(data).encode())
    return attrs["subject"].encode(), value, [("content-type", b"application/cloudevents+json")]


def landed_rows(lake: Lake, ms: Metastore, product: str, kind: str = "landed") -> list[dict]:
    files = [f.path for f in ms.live_files(product, kinds=(kind,))]
    return lake.read_tables(files).to_pylist() if files else []


@pytest.fixture
def stores(tmp_path):
    return Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'ms.db'}")


def strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def test_binary_and_structured_decode_to_the_same_rows_with_ce_columns_and_ce_time_hours(make_topic, kafka_bootstrap, stores):
    lake, ms = stores
    t_bin, t_str = make_topic(1), make_topic(1)
    events = [event(i, minutes=i * 20) for i in range(6)]  # 09:15 … 10:55: two hours by ce_time
    send(kafka_bootstrap, t_bin, [binary(a, d) for a, d in events])
    send(kafka_bootstrap, t_str, [structured(a, d) for a, d in events])
    r_bin = land(ce_spec(t_bin, name="orders_b"), lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    r_str = land(ce_spec(t_str, name="orders_s"), lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert r_bin.landed == r_str.landed == 6 and r_bin.quarantined == r_str.quarantined == 0
    assert r_bin.hours == r_str.hours == {"2026-11-20-09": 3, "2026-11-20-10": 3}  # from ce_time, not Kafka time
    rows_b = sorted((strip(r) for r in landed_rows(lake, ms, "orders_b")), key=lambda r: r["order_id"])
    rows_s = sorted((strip(r) for r in landed_rows(lake, ms, "orders_s")), key=lambda r: r["order_id"])
    assert rows_b == rows_s
    assert rows_b[1] == {"order_id": "o-1", "amount": 10, "ce_id": "orders:o-1:1", "ce_source": "/shop/orders",
                         "ce_type": "shop.order.created", "ce_time": T0 + timedelta(minutes=20), "ce_subject": "o-1"}


def test_malformed_envelopes_are_quarantined_with_a_reason(topic, kafka_bootstrap, stores):
    lake, ms = stores
    good_attrs, good = event(1)
    missing_id = [h for h in binary_headers(**good_attrs) if h[0] != "ce_id"]
    bad_version = [("ce_specversion", b"0.3")] + [h for h in binary_headers(**event(2)[0]) if h[0] != "ce_specversion"]
    bad_time = [h if h[0] != "ce_time" else ("ce_time", b"yesterday") for h in binary_headers(**event(3)[0])]
    ct = [("content-type", b"application/cloudevents+json")]
    no_type = json.dumps({"specversion": "1.0", "id": "x-1", "source": "/s", "data": good}).encode()
    send(kafka_bootstrap, topic, [
        binary(good_attrs, good),
        (b"o-1", json.dumps(good).encode(), missing_id),
        (b"o-2", json.dumps(event(2)[1]).encode(), bad_version),
        (b"o-3", json.dumps(event(3)[1]).encode(), bad_time),
        (b"o-4", b'{"specversion": "1.0", "id": ', ct),  # structured, invalid JSON
        (b"o-5", no_type, ct),  # structured, no type
        (b"o-6", json.dumps(good).encode(), []),  # plain JSON: neither mode
        (b"o-7", b"not json", [("content-type", b"text/plain")]),
        binary(event(8)[0], {"order_id": "o-8", "amount": -5}),  # a valid envelope, data breaks a rule
    ])
    r = land(ce_spec(topic), lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert r.consumed == 9 and r.landed == 1 and r.quarantined == 8
    q = {row["_key"]: row for row in landed_rows(lake, ms, "orders", "quarantine")}
    assert "binary mode): missing required attribute(s) id" in q["o-1"]["_error"]
    assert "unsupported CloudEvents specversion '0.3'" in q["o-2"]["_error"]
    assert "ce_time is not an RFC 3339 timestamp" in q["o-3"]["_error"]
    assert "structured mode): invalid JSON" in q["o-4"]["_error"]
    assert "structured mode): missing required attribute(s) type" in q["o-5"]["_error"]
    assert "malformed CloudEvent (structured mode)" in q["o-6"]["_error"]  # a JSON object without attributes
    assert "not a CloudEvent" in q["o-7"]["_error"]
    assert "amount" in q["o-8"]["_error"]
    # A quarantined binary event keeps its envelope: _raw is the event in structured mode.
    raw = json.loads(q["o-2"]["_raw"])
    assert raw["specversion"] == "0.3" and raw["data"] == event(2)[1] and raw["id"] == "orders:o-2:1"
    assert json.loads(q["o-8"]["_raw"])["data"]["amount"] == -5


def test_dedupe_on_ce_id_within_a_run_and_across_runs(topic, kafka_bootstrap, stores):
    lake, ms = stores
    spec = ce_spec(topic)
    a1, d1 = event(1)
    a2, d2 = event(2)
    send(kafka_bootstrap, topic, [binary(a1, d1), binary(a2, d2), structured(a1, d1)])  # o-1 twice, both modes
    first = land(spec, lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert first.landed == 2 and first.quarantined == 1
    send(kafka_bootstrap, topic, [binary(a2, d2), binary(event(3)[0], event(3)[1])])  # o-2 again, in a later run
    second = land(spec, lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert second.landed == 1 and second.quarantined == 1
    ids = sorted(r["ce_id"] for r in landed_rows(lake, ms, "orders"))
    assert ids == ["orders:o-1:1", "orders:o-2:1", "orders:o-3:1"]
    errors = sorted(r["_error"] for r in landed_rows(lake, ms, "orders", "quarantine"))
    assert "first seen in an earlier run" in errors[0] or "first seen in an earlier run" in errors[1]
    # Without dedupe_on_id, the same stream lands every copy.
    plain = land(ce_spec(topic, name="orders_all", cloudevents={"dedupe_on_id": False}), lake=lake, metastore=ms,
                 bootstrap=kafka_bootstrap)
    assert plain.landed == 5


def test_a_binary_event_without_data_is_a_tombstone(topic, kafka_bootstrap, stores):
    lake, ms = stores
    a1, d1 = event(1)
    gone = {**a1, "id": cloudevent_id("orders", "o-1", 2), "type": "shop.order.deleted"}
    send(kafka_bootstrap, topic, [binary(a1, d1), binary(gone, None)])
    with_deletes = ce_spec(topic, sinks={"database": {"deletes": "tombstone"}})
    r = land(with_deletes, lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert r.landed == 2
    rows = sorted(landed_rows(lake, ms, "orders"), key=lambda x: x["_offset"])
    assert rows[1]["_deleted"] is True and rows[1]["order_id"] == "o-1" and rows[1]["ce_type"] == "shop.order.deleted"
    no_deletes = land(ce_spec(topic, name="orders_nodel"), lake=lake, metastore=ms, bootstrap=kafka_bootstrap)
    assert no_deletes.landed == 1 and no_deletes.quarantined == 1
