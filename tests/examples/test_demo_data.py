"""Demo click traffic: realistic, deterministic, every invalid kind, delivered exactly as generated."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

from examples.demo_data import INVALID_KINDS, demo_window, generate_clicks, produce
from tests.support import read_messages

NOW = datetime(2026, 11, 26, 10, 17, 30, tzinfo=UTC)


def test_generation_is_deterministic_and_valid_records_meet_the_spec():
    records = list(generate_clicks(20_000, hours=3, invalid_rate=0.0, seed=7, now=NOW))
    assert records == list(generate_clicks(20_000, hours=3, invalid_rate=0.0, seed=7, now=NOW))
    assert records != list(generate_clicks(20_000, hours=3, invalid_rate=0.0, seed=8, now=NOW))
    assert all(valid for _, _, valid in records)
    rows = [json.loads(value) for _, value, _ in records]
    assert [key.decode() for key, _, _ in records] == [r["event_id"] for r in rows]
    assert len({r["event_id"] for r in rows}) == len(rows)
    kinds = Counter(r["kind"] for r in rows)
    assert set(kinds) == {"impression", "click"}
    assert 0.07 < kinds["click"] / len(rows) < 0.13
    assert all(re.fullmatch(r"p-[0-9]{3}", r["partner_id"]) for r in rows)
    assert all(
        isinstance(r["cost_micros"], int) and 0 <= r["cost_micros"] <= 100_000_000 for r in rows
    )
    start, end = demo_window(3, NOW)
    assert start == datetime(2026, 11, 26, 8, tzinfo=UTC)
    times = [datetime.fromisoformat(r["event_time"]) for r in rows]
    assert all(r["event_time"].endswith("Z") for r in rows)
    assert start <= min(times) and max(times) <= NOW
    hours = Counter(t.replace(minute=0, second=0, microsecond=0) for t in times)
    assert sorted(hours) == [start + timedelta(hours=h) for h in range(3)]


def test_invalid_records_cover_every_kind():
    records = list(generate_clicks(10_000, hours=2, invalid_rate=0.1, seed=1, now=NOW))
    invalid = [value for _, value, valid in records if not valid]
    assert 800 < len(invalid) < 1200
    assert b"" in invalid
    assert any(b"\xff" in v for v in invalid)
    decoded = []
    for value in invalid:
        try:
            decoded.append(json.loads(value))
        except (ValueError, UnicodeDecodeError):
            continue
    objects = [d for d in decoded if isinstance(d, dict)]
    assert len(decoded) > len(objects)  # JSON that is not an object
    assert any(d.get("kind") not in (None, "impression", "click") for d in objects)
    assert any(
        isinstance(d.get("cost_micros"), int)
        and not isinstance(d["cost_micros"], bool)
        and d["cost_micros"] < 0
        for d in objects
    )
    assert any(isinstance(d.get("cost_micros"), str | bool) for d in objects)
    assert any(not re.fullmatch(r"p-[0-9]{3}", d.get("partner_id", "p-000")) for d in objects)
    assert any(len(d) < 7 for d in objects)  # a required field missing
    assert len(INVALID_KINDS) == 8


def read_all(bootstrap: str, topic: str, partitions: int) -> dict[int, list]:
    """Every record of the topic, per partition: [(offset, key, value)] in offset order."""
    found: dict[int, list] = {p: [] for p in range(partitions)}
    for m in read_messages(bootstrap, topic, partitions):
        found[m.partition()].append((m.offset(), m.key(), m.value()))
    return found


def test_produce_delivers_every_record_exactly_once(kafka_bootstrap, make_topic):
    topic = make_topic(partitions=3)
    records = list(generate_clicks(30_000, hours=4, invalid_rate=0.05, seed=42))
    calls: list[int] = []
    report = produce(
        kafka_bootstrap, topic, records, partitions=3, progress=calls.append, progress_every=5_000
    )

    valid = sum(1 for _, _, ok in records if ok)
    assert (report.produced, report.valid, report.invalid) == (30_000, valid, 30_000 - valid)
    assert calls[-1] == 30_000 and calls == sorted(calls)
    assert sum(report.per_partition.values()) == 30_000 and len(report.per_partition) == 3

    found = read_all(kafka_bootstrap, topic, partitions=3)
    assert {p: len(rows) for p, rows in found.items()} == report.per_partition
    for rows in found.values():
        assert [offset for offset, _, _ in rows] == list(range(len(rows)))
    read_back = Counter((key, value) for rows in found.values() for _, key, value in rows)
    assert read_back == Counter((key, value) for key, value, _ in records)


def test_a_key_always_lands_in_the_same_partition(kafka_bootstrap, topic):
    records = list(generate_clicks(2_000, hours=1, invalid_rate=0.0, seed=3))
    again = [(key, value.replace(b'"impression"', b'"click"'), ok) for key, value, ok in records]
    produce(kafka_bootstrap, topic, records, partitions=2)
    produce(kafka_bootstrap, topic, again, partitions=2)
    found = read_all(kafka_bootstrap, topic, partitions=2)
    partitions_of: dict[bytes, set[int]] = {}
    for partition, rows in found.items():
        for _, key, _ in rows:
            partitions_of.setdefault(key, set()).add(partition)
    assert len(partitions_of) == 2_000
    assert all(len(p) == 1 for p in partitions_of.values())
    assert sum(len(rows) for rows in found.values()) == 4_000
