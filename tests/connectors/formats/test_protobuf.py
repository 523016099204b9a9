"""The Protobuf decoder on batches: scalars, enums, nested messages, Timestamp and the wrappers
round-trip; the message-index array picks the message (as Confluent's own serializer writes
it); evolution by field name per schema id; unreadable records quarantined with reasons."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import message_factory

from connectors.formats import decoder_for
from connectors.formats.protobuf import (
    ProtobufDecoder,
    compile_proto,
    encode_indexes,
    message_indexes,
)
from connectors.formats.registry import SchemaUnavailableError, WriterSchema
from connectors.spec import DataProductSpec
from tests.connectors.formats.avro_support import batch
from tests.connectors.formats.fields_support import DEVICE_FIELDS, SCALAR_FIELDS

TS = datetime(2026, 11, 30, 10, 15, 30, 123456, tzinfo=UTC)

PROTO_V1 = """
syntax = "proto3";
package flowsuite.test;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

message Everything {
  enum Color { RED = 0; GREEN = 1; }
  message Device { string os = 1; Screen screen = 2; }
  string s = 1;
  int32 i = 2;
  int64 l = 3;
  double d = 4;
  float f = 5;
  bool b = 6;
  bytes raw = 7;
  Color color = 8;
  google.protobuf.Timestamp ts = 9;
  google.protobuf.Int64Value maybe = 10;
  google.protobuf.StringValue note = 11;
  optional int64 opt = 12;
  Device device = 13;
  sint64 z = 14;
  uint32 u = 15;
  sfixed64 sfx = 16;
  google.protobuf.BoolValue flag = 17;
  google.protobuf.DoubleValue dv = 18;
  google.protobuf.Timestamp event_time = 19;
  repeated string tags = 20;
}
message Screen { int32 w = 1; }
message Other { string s = 1; google.protobuf.Timestamp event_time = 2; }
"""
# v2: `l` removed (optional in the spec), `country` added, `i` becomes a string (incompatible
# with the spec's int32 — so only records of v2 that reach that field... every record: the plan).
PROTO_V2 = """
syntax = "proto3";
package flowsuite.test;
import "google/protobuf/timestamp.proto";
message Everything {
  string s = 1;
  string country = 21;
  google.protobuf.Timestamp event_time = 19;
}
"""
PROTO_BAD = PROTO_V2.replace("string s = 1;", "int64 s = 1;")

FIELDS = [
    *SCALAR_FIELDS,
    {"name": "color", "type": "string"},
    {"name": "ts", "type": "timestamp"},
    {"name": "maybe", "type": "int64"},
    {"name": "note", "type": "string"},
    {"name": "opt", "type": "int64"},
    *DEVICE_FIELDS,
    {"name": "z", "type": "int64"},
    {"name": "u", "type": "int64"},
    {"name": "sfx", "type": "int64"},
    {"name": "flag", "type": "boolean"},
    {"name": "dv", "type": "float64"},
    {"name": "country", "type": "string"},
    {"name": "event_time", "type": "timestamp", "required": True},
]


class Schemas:
    """A schema source over .proto texts by id (what FileSchemas and RegistrySchemas return)."""

    def __init__(self, texts: dict[int, str]):
        self.texts = texts

    def get(self, sid: int) -> WriterSchema:
        if sid not in self.texts:
            raise SchemaUnavailableError(f"schema id {sid} is unknown")
        return WriterSchema(sid, "PROTOBUF", self.texts[sid], name=f"v{sid}")


def proto_spec(topic: str = "t", message: str | None = "flowsuite.test.Everything", fields=FIELDS) -> DataProductSpec:
    timed = any(f["name"] == "event_time" for f in fields)
    return DataProductSpec.model_validate({
        "name": "clicks_proto", "owner": "team:ads", "topic": topic, "format": "protobuf",
        "fields": fields, "event_time": {"field": "event_time"} if timed else {"source": "kafka_timestamp"},
        "partitioning": {"start": "2026-01-01T00:00:00Z"},
        "schemas": {"source": "files", "files": {1: "v1.proto"}, "message": message},
    })


def classes(text: str, sid: int = 1) -> dict:
    fd = compile_proto(WriterSchema(sid, "PROTOBUF", text))
    out = {}
    for name, desc in fd.message_types_by_name.items():
        out[name] = message_factory.GetMessageClass(desc)
        for nested in desc.nested_types:
            out[f"{name}.{nested.name}"] = message_factory.GetMessageClass(nested)
    return out


def frame(sid: int, message, indexes=(0,)) -> bytes:
    return b"\x00" + sid.to_bytes(4, "big") + encode_indexes(list(indexes)) + message.SerializeToString()


def stamp(msg, ts: datetime) -> None:
    micros = int(ts.timestamp()) * 1_000_000 + ts.microsecond
    msg.seconds, msg.nanos = micros // 1_000_000, (micros % 1_000_000) * 1000 + 789  # +789 ns: below a µs


def everything(cls, k: int):
    m = cls["Everything"](s=f"héllo-{k}", i=-(2**31) + k, l=2**62 + k, d=1.5e300, f=0.5 * k, b=bool(k % 2),
                          raw=bytes([0, 255, k]), color=k % 2, z=-(2**62) - k, u=2**32 - 1 - k, sfx=-5 - k)
    stamp(m.ts, TS)
    stamp(m.event_time, TS)
    if k % 2 == 0:
        m.maybe.value = k * 1000
        m.note.value = ""  # set, but empty: not null
        m.opt = 0  # explicitly set zero: presence says it is there
        m.flag.value = False
        m.dv.value = 0.25
        m.device.os = "linux"
        m.device.screen.w = 1080 + k
    return m


def test_every_type_and_well_known_type_round_trips(tmp_path):
    cls = classes(PROTO_V1)
    decoder = ProtobufDecoder(proto_spec(), source=Schemas({1: PROTO_V1}))
    decoded = decoder.decode(batch([frame(1, everything(cls, k)) for k in range(2)]))
    assert decoded.invalid.num_rows == 0, decoded.invalid.to_pylist()
    even, odd = decoded.valid.to_pylist()
    assert even["s"] == "héllo-0" and even["i"] == -(2**31) and even["l"] == 2**62 and even["d"] == 1.5e300
    assert even["f"] == 0.0 and odd["f"] == 0.5 and even["b"] is False and odd["b"] is True
    assert even["raw"] == b"\x00\xff\x00" and even["color"] == "RED" and odd["color"] == "GREEN"
    assert even["ts"] == TS and even["event_time"] == TS  # nanoseconds below a microsecond are cut
    assert even["z"] == -(2**62) and even["u"] == 2**32 - 1 and even["sfx"] == -5
    assert even["maybe"] == 0 and even["note"] == "" and even["opt"] == 0 and even["flag"] is False and even["dv"] == 0.25
    assert odd["maybe"] is None and odd["note"] is None and odd["opt"] is None and odd["flag"] is None and odd["dv"] is None
    assert even["os"] == "linux" and even["screen_w"] == 1080 and odd["os"] is None and odd["screen_w"] is None
    assert even["country"] is None  # v1 has no country: null, the optional field's default


def test_message_indexes_pick_the_message_and_a_wrong_one_is_quarantined():
    cls = classes(PROTO_V1)
    spec = proto_spec(message="flowsuite.test.Other",
                      fields=[{"name": "s", "type": "string"}, {"name": "event_time", "type": "timestamp"}])
    other = cls["Other"](s="x")
    stamp(other.event_time, TS)
    device = cls["Everything.Device"](os="mac")
    values = [frame(1, other, [2]), frame(1, device, [0, 0]), frame(1, other, [7])]
    decoded = ProtobufDecoder(spec, source=Schemas({1: PROTO_V1})).decode(batch(values))
    assert decoded.valid.column("s").to_pylist() == ["x"]
    errors = decoded.invalid.column("_error").to_pylist()
    assert "the record is a flowsuite.test.Everything.Device, the product reads flowsuite.test.Other" in errors[0]
    assert "message index [7] names no message" in errors[1]


def test_index_arrays_as_confluents_serializer_writes_them():
    import io

    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

    for indexes in ([0], [2], [0, 0], [1, 5, 300]):
        buf = io.BytesIO()
        ProtobufSerializer._encode_varints(buf, indexes)
        assert buf.getvalue() == encode_indexes(indexes)
        assert message_indexes(buf.getvalue() + b"rest", 0)[:2] == (tuple(indexes), len(buf.getvalue()))


def test_evolution_by_schema_id_and_incompatible_change_quarantined():
    c1, c2, cbad = classes(PROTO_V1), classes(PROTO_V2, 2), classes(PROTO_BAD, 3)
    fields = [{"name": "s", "type": "string", "required": True}, {"name": "l", "type": "int64"},
              {"name": "country", "type": "string"}, {"name": "event_time", "type": "timestamp", "required": True}]
    spec = proto_spec(fields=fields)
    v2 = c2["Everything"](s="two", country="NL")
    stamp(v2.event_time, TS)
    bad = cbad["Everything"](s=5)
    values = [frame(1, everything(c1, 0)), frame(2, v2), frame(3, bad)]
    decoded = ProtobufDecoder(spec, source=Schemas({1: PROTO_V1, 2: PROTO_V2, 3: PROTO_BAD})).decode(batch(values))
    rows = decoded.valid.to_pylist()
    assert [(r["s"], r["l"], r["country"]) for r in rows] == [("héllo-0", 2**62, None), ("two", None, "NL")]
    (q,) = decoded.invalid.to_pylist()
    assert q["_offset"] == 2 and "schema id 3" in q["_error"] and "field 's' is int64" in q["_error"]
    assert q["_raw"] == values[2]


def test_framing_errors_truncation_and_unknown_ids():
    cls = classes(PROTO_V1)
    good = frame(1, everything(cls, 0))
    spec = proto_spec()
    decoder = decoder_for(spec, source=Schemas({1: PROTO_V1}))
    assert isinstance(decoder, ProtobufDecoder)
    values = [good, b"\x05" + good[1:], good[:4], good[:6], good[:-3], b"\x00\x00\x00\x00\x01\x81"]
    decoded = decoder.decode(batch(values))
    assert decoded.valid.column("_offset").to_pylist() == [0]
    errors = decoded.invalid.column("_error").to_pylist()
    assert "wrong magic byte 5" in errors[0]
    assert "5-byte header" in errors[1]
    # The header, index 0 and no bytes: an empty message is valid Protobuf; the spec's rules catch it.
    assert errors[2] == "missing required field 'event_time'"
    assert "truncated or corrupt" in errors[3]
    assert "message-index array ends early" in errors[4]
    with pytest.raises(SchemaUnavailableError, match="schema id 4"):
        decoder.decode(batch([frame(4, everything(cls, 0))]))


def test_repeated_fields_and_whole_messages_have_no_spec_type():
    cls = classes(PROTO_V1)
    for field in ("tags", "device"):
        spec = proto_spec(fields=[{"name": field, "type": "string"}, {"name": "event_time", "type": "timestamp"}])
        decoded = ProtobufDecoder(spec, source=Schemas({1: PROTO_V1})).decode(batch([frame(1, everything(cls, 0))]))
        assert decoded.valid.num_rows == 0
        assert ("repeated" if field == "tags" else "declare its leaves with `path`") in decoded.invalid.column("_error")[0].as_py()


def test_a_proto_that_does_not_compile_stops_with_protocs_message():
    decoder = ProtobufDecoder(proto_spec(), source=Schemas({1: "syntax = \"proto3\"; message { }"}))
    with pytest.raises(SchemaUnavailableError, match="does not compile"):
        decoder.decode(batch([b"\x00\x00\x00\x00\x01\x00\x0a\x01x"]))
