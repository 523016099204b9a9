"""The Avro decoder on batches: every spec type and Avro logical type round-trips without loss,
writer schemas evolve by the Avro resolution rules, and what cannot be read is quarantined with
its reason and bytes — except an unknown schema id, which stops the run."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.formats import decoder_for
from connectors.formats.avro import AvroDecoder
from connectors.formats.registry import FileSchemas, SchemaUnavailableError
from tests.support.avro import (
    CLICK_FIELDS,
    V1,
    V2,
    V3,
    V4,
    V5,
    avro_spec,
    batch,
    click,
    wire,
    write_schemas,
)
from tests.support.fields import DEVICE_FIELDS, SCALAR_FIELDS

TS = datetime(2026, 11, 30, 10, 15, 30, 123456, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[3]

ALL_TYPES = {
    "type": "record", "name": "Everything", "namespace": "flowsuite.test",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "d", "type": "double"},
        {"name": "f", "type": "float"},
        {"name": "b", "type": "boolean"},
        {"name": "raw", "type": "bytes"},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
        {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 4}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "maybe", "type": ["null", "long"], "default": None},
        {"name": "device", "type": {"type": "record", "name": "Device", "fields": [
            {"name": "os", "type": "string"},
            {"name": "screen", "type": ["null", {"type": "record", "name": "Screen", "fields": [{"name": "w", "type": "int"}]}]},
        ]}},
        {"name": "tod_ms", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "tod_us", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    ],
}
ALL_FIELDS = [
    *SCALAR_FIELDS,
    {"name": "fx", "type": "bytes"},
    {"name": "color", "type": "string"},
    {"name": "ts_ms", "type": "timestamp"},
    {"name": "ts_us", "type": "timestamp"},
    {"name": "day", "type": "date"},
    {"name": "price", "type": "string"},
    {"name": "id", "type": "string"},
    {"name": "maybe", "type": "int64"},
    *DEVICE_FIELDS,
    {"name": "tod_ms", "type": "int32"},
    {"name": "tod_us", "type": "int64"},
    {"name": "event_time", "type": "timestamp", "required": True},
]


def record(k: int) -> dict:
    return {
        "s": f"héllo-{k}", "i": -(2**31) + k, "l": 2**62 + k, "d": 1.5e300 * (k + 1), "f": 0.5 * k,
        "b": k % 2 == 0, "raw": bytes([0, 255, k]), "fx": b"\x00\x01\x02" + bytes([k]),
        "color": "GREEN" if k else "RED",
        "ts_ms": TS.replace(microsecond=123000), "ts_us": TS, "day": date(1969, 12, 31 - k),
        "price": Decimal("-12345678.9012") + k, "id": str(uuid.UUID(int=k + 1)),
        "maybe": None if k % 2 else k, "device": {"os": "linux", "screen": None if k % 2 else {"w": 1080 + k}},
        "tod_ms": time(23, 59, 59, 999000), "tod_us": time(0, 0, 1, 5 + k),
        "event_time": TS,
    }


def test_every_type_and_logical_type_round_trips_without_loss(tmp_path):
    files = write_schemas(tmp_path, {7: ALL_TYPES})
    spec = avro_spec("t", files, ALL_FIELDS)
    decoder = decoder_for(spec)
    assert isinstance(decoder, AvroDecoder)
    records = [record(k) for k in range(3)]
    decoded = decoder.decode(batch([wire(7, ALL_TYPES, r) for r in records]))
    assert decoded.invalid.num_rows == 0, decoded.invalid.to_pylist()
    assert decoded.valid.schema.field("ts_ms").type == pa.timestamp("us", tz="UTC")
    assert decoded.valid.schema.field("day").type == pa.date32()
    rows = decoded.valid.to_pylist()
    for k, (row, want) in enumerate(zip(rows, records, strict=True)):
        assert row["s"] == want["s"] and row["i"] == want["i"] and row["l"] == want["l"]
        assert row["d"] == want["d"] and row["f"] == want["f"] and row["b"] is want["b"]
        assert row["raw"] == want["raw"] and row["fx"] == want["fx"] and row["color"] == want["color"]
        assert row["ts_ms"] == want["ts_ms"] and row["ts_us"] == TS  # micros kept
        assert row["day"] == want["day"]
        assert Decimal(row["price"]) == want["price"] and row["price"] == str(want["price"])  # exact text
        assert row["id"] == want["id"]
        assert row["maybe"] == want["maybe"]
        assert row["os"] == "linux" and row["screen_w"] == (None if k % 2 else 1080 + k)  # flattened, null-safe
        assert row["tod_ms"] == 86_399_999 and row["tod_us"] == 1_000_005 + k  # time of day: its number
        assert row["_offset"] == k and row["_partition"] == 0
    assert decoded.hours.to_pylist() == [int(TS.timestamp() // 3600)] * 3


def test_timestamp_millis_into_an_int64_field_stays_epoch_milliseconds(tmp_path):
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    spec = avro_spec("t", write_schemas(tmp_path, {1: schema}), [{"name": "event_time", "type": "int64"}])
    decoded = decoder_for(spec).decode(batch([wire(1, schema, {"event_time": TS})]))
    assert decoded.valid.column("event_time").to_pylist() == [int(TS.timestamp() * 1000)]


def test_evolution_added_field_removed_optional_field_promotion_and_incompatible_changes(tmp_path):
    schemas = {1: V1, 2: V2, 3: V3, 4: V4, 5: V5}
    spec = avro_spec("t", write_schemas(tmp_path, schemas), CLICK_FIELDS)
    values = [wire(v, schemas[v], click(k, v)) for k, v in enumerate([1, 2, 3, 1, 4, 5, 2])]
    decoded = decoder_for(spec).decode(batch(values))
    rows = {r["_offset"]: r for r in decoded.valid.to_pylist()}
    assert sorted(rows) == [0, 1, 2, 3, 6]
    assert rows[0]["country"] is None and rows[0]["kind"] == "click"  # v1 lacks country: its default, null
    assert rows[1]["country"] == "NL" and rows[1]["cost"] == 1  # v2: added field, int → long
    assert rows[2]["kind"] is None and rows[2]["country"] == "NL"  # v3: kind removed, reads as null
    bad = {r["_offset"]: r for r in decoded.invalid.to_pylist()}
    assert sorted(bad) == [4, 5]
    assert "schema id 4" in bad[4]["_error"] and "field 'cost' is string" in bad[4]["_error"] and "int64" in bad[4]["_error"]
    assert "schema id 5" in bad[5]["_error"] and "no field 'event_id'" in bad[5]["_error"]
    assert bad[4]["_raw"] == values[4] and bad[5]["_raw"] == values[5]  # the original bytes


def test_framing_errors_are_quarantined_with_their_reason_and_bytes(tmp_path):
    spec = avro_spec("t", write_schemas(tmp_path, {1: V1}), CLICK_FIELDS)
    good = wire(1, V1, click(0, 1))
    values = [
        good,
        b"\x01" + good[1:],  # wrong magic byte
        good[:3],  # shorter than the header
        good[:-4],  # truncated payload
        good + b"\x00\x00",  # trailing bytes
        b"{\"event_id\": \"json\"}",  # not the wire format at all
        b"",
    ]
    decoded = decoder_for(spec).decode(batch(values))
    assert decoded.valid.column("_offset").to_pylist() == [0]
    reasons = dict(zip(decoded.invalid.column("_offset").to_pylist(), decoded.invalid.column("_error").to_pylist(), strict=True))
    assert "wrong magic byte 1" in reasons[1]
    assert "5-byte header" in reasons[2]
    assert "truncated payload" in reasons[3]
    assert "2 byte(s) left after the record" in reasons[4]
    assert "wrong magic byte 123" in reasons[5]
    assert reasons[6] == "value is empty"
    assert decoded.invalid.column("_raw").to_pylist() == values[1:]


def test_an_unknown_schema_id_stops_the_batch_instead_of_quarantining(tmp_path):
    spec = avro_spec("t", write_schemas(tmp_path, {1: V1}), CLICK_FIELDS)
    decoder = decoder_for(spec)
    with pytest.raises(SchemaUnavailableError, match="schema id 9 is not mapped.*mapped ids: 1.*nothing was committed"):
        decoder.decode(batch([wire(1, V1, click(0, 1)), wire(9, V1, click(1, 1))]))


def test_schemas_are_read_once_per_id(tmp_path):
    files = write_schemas(tmp_path, {1: V1})
    reads = []

    class Counting(FileSchemas):
        def _fetch(self, sid):
            reads.append(sid)
            return super()._fetch(sid)

    spec = avro_spec("t", files, CLICK_FIELDS)
    decoder = AvroDecoder(spec, source=Counting(files, tmp_path))
    for _ in range(3):
        decoder.decode(batch([wire(1, V1, click(k, 1)) for k in range(50)]))
    assert reads == [1]


def test_rules_of_the_spec_apply_after_decoding_and_tombstones_delete(tmp_path):
    fields = [dict(f) for f in CLICK_FIELDS]
    fields[2] |= {"max": 5}
    spec = avro_spec("t", write_schemas(tmp_path, {1: V1}), fields, key="event_id",
                     sinks={"database": {"deletes": "tombstone"}})
    decoded = decoder_for(spec).decode(batch([wire(1, V1, click(3, 1)), wire(1, V1, click(9, 1)), None],
                                             keys=[b"e-3", b"e-9", b"e-3"]))
    assert decoded.valid.column("_deleted").to_pylist() == [False, True]
    assert decoded.invalid.column("_error").to_pylist() == ["field 'cost' = 9 is above max 5"]


def test_spec_needs_a_schemas_section_for_avro():
    with pytest.raises(Exception, match="needs a `schemas` section"):
        avro_spec("t", {}, CLICK_FIELDS, schemas=None)


def test_validate_names_a_missing_schema_file(tmp_path):
    from connectors.spec import SpecError, parse_spec_file

    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "v1.avsc").write_text(json.dumps(V1))
    text = (REPO / "dataproducts" / "clicks_avro.yaml").read_text()
    (tmp_path / "clicks_avro.yaml").write_text(text.replace("1: clicks-v1.avsc", "1: v1.avsc"))
    with pytest.raises(SpecError) as err:
        parse_spec_file(tmp_path / "clicks_avro.yaml")
    problems = {p.location: p.message for p in err.value.problems}
    assert set(problems) == {"schemas.files.2", "schemas.files.3"}
    assert "clicks-v2.avsc does not exist" in problems["schemas.files.2"]


def test_a_string_that_is_not_utf8_bytes_is_quarantined_alone(tmp_path):
    schema = {"type": "record", "name": "R", "fields": [{"name": "s", "type": "bytes"}]}
    spec = avro_spec("t", write_schemas(tmp_path, {1: schema}), [{"name": "s", "type": "string"}],
                     event_time={"source": "kafka_timestamp"})
    decoded = decoder_for(spec).decode(batch([wire(1, schema, {"s": b"ok"}), wire(1, schema, {"s": b"\xff"})]))
    assert decoded.valid.column("s").to_pylist() == ["ok"]
    assert "field 's' cannot be read as string" in decoded.invalid.column("_error")[0].as_py()


def test_a_writer_schema_that_is_not_a_record_does_not_resolve(tmp_path):
    spec = avro_spec("t", write_schemas(tmp_path, {1: "string"}), [{"name": "s", "type": "string"}],
                     event_time={"source": "kafka_timestamp"})
    decoded = decoder_for(spec).decode(batch([wire(1, "string", "x")]))
    assert "the writer schema is not a record" in decoded.invalid.column("_error")[0].as_py()
