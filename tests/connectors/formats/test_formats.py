"""Decoding and record validation, called directly (no broker): what lands, what is quarantined
and why, and that a malformed record in a large batch costs only itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.formats import (
    Batch,
    CloudEventsDecoder,
    Decoder,
    decoder_for,
    lake_schema,
    record_violations,
)
from connectors.lake import epoch_hour
from connectors.spec import parse_spec_file

REPO = Path(__file__).resolve().parents[3]
CLICKS = parse_spec_file(REPO / "dataproducts" / "clicks.yaml")
T0 = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)


def click(i: int, **override) -> dict:
    record = {"event_id": f"e-{i}", "user_id": f"u-{i}", "partner_id": "p-001", "ad_id": "ad-1",
              "kind": "click", "cost_micros": 100, "event_time": T0.isoformat()}
    return record | override


def batch(values: list[bytes | None]) -> Batch:
    n = len(values)
    return Batch(partition=0, values=values, keys=[f"k{i}".encode() for i in range(n)],
                 offsets=list(range(100, 100 + n)), timestamps=[1_700_000_000_000] * n)


def encode(records: list[dict]) -> list[bytes]:
    return [json.dumps(r).encode() for r in records]


def test_decoder_for_dispatches_on_the_spec_format():
    assert type(decoder_for(CLICKS)) is Decoder
    ce = CLICKS.model_copy(update={"format": "cloudevents"})
    assert isinstance(decoder_for(ce), CloudEventsDecoder)


def test_valid_records_land_with_provenance_and_their_event_hour():
    decoded = Decoder(CLICKS).decode(batch(encode([click(i) for i in range(5)])))
    assert decoded.valid.num_rows == 5 and decoded.invalid.num_rows == 0
    assert decoded.valid.schema == lake_schema(CLICKS)
    assert decoded.valid.column("_offset").to_pylist() == [100, 101, 102, 103, 104]
    assert decoded.valid.column("_topic").to_pylist() == ["clicks"] * 5
    assert set(decoded.hours.to_pylist()) == {epoch_hour(T0)}
    assert decoded.consumed == 5


def test_each_bad_record_is_quarantined_with_its_own_reason_and_raw_bytes():
    values = encode([click(0), click(1, kind="view"), click(2, cost_micros=-5), click(3)])
    values += [b"", b"{not json", b"[1, 2]", None]
    decoded = Decoder(CLICKS).decode(batch(values))
    assert decoded.valid.column("event_id").to_pylist() == ["e-0", "e-3"]
    reasons = dict(zip(decoded.invalid.column("_offset").to_pylist(), decoded.invalid.column("_error").to_pylist(),
                       strict=True))
    assert set(reasons) == {101, 102, 104, 105, 106, 107}
    assert "'view' is not one of [impression, click]" in reasons[101]
    assert "below min 0" in reasons[102]
    assert reasons[104] == "value is empty"
    assert reasons[105].startswith("malformed JSON")
    assert "expected an object" in reasons[106]
    assert "tombstone" in reasons[107]
    assert decoded.invalid.column("_raw").to_pylist()[2] == b""


def test_one_malformed_record_in_a_large_batch_costs_only_itself():
    records = encode([click(i) for i in range(5000)])
    records[3210] = b'{"event_id": "broken'
    decoded = Decoder(CLICKS).decode(batch(records))
    assert decoded.valid.num_rows == 4999
    assert decoded.invalid.column("_offset").to_pylist() == [100 + 3210]


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"partner_id": "x-1"}, "does not match pattern"),
        ({"kind": "CLICK"}, "is not one of"),
        ({"cost_micros": 100_000_001}, "above max"),
        ({"event_id": "e" * 65}, "above max_length 64"),
        ({"user_id": None}, "missing required field 'user_id'"),
    ],
)
def test_record_violations_name_the_first_failing_rule(override, reason):
    rows = pa.Table.from_pylist([click(0, event_time=T0), click(1, event_time=T0, **override)], schema=CLICKS.arrow_schema())
    violations = record_violations(CLICKS, rows).to_pylist()
    assert violations[0] is None
    assert violations[1] is not None and reason in violations[1], violations[1]
