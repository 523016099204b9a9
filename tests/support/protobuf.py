"""Protobuf fixtures shared by the format and schema-registry tests: a .proto of every scalar
and well-known type, its compiled classes, and a message holding all of them."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import message_factory

from connectors.formats.protobuf import (
    compile_proto,
    encode_indexes,
)
from connectors.formats.registry import SchemaUnavailableError, WriterSchema
from connectors.spec import DataProductSpec
from tests.support.fields import DEVICE_FIELDS, SCALAR_FIELDS

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


