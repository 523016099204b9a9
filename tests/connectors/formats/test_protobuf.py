"""The Protobuf decoder on batches: scalars, enums, nested messages, Timestamp and the wrappers
round-trip; the message-index array picks the message (as Confluent's own serializer writes
it); evolution by field name per schema id; unreadable records quarantined with reasons."""

from __future__ import annotations

import pytest

from connectors.formats import decoder_for
from connectors.formats.protobuf import (
    ProtobufDecoder,
    encode_indexes,
    message_indexes,
)
from connectors.formats.registry import SchemaUnavailableError
from tests.support.avro import batch
from tests.support.protobuf import (
    PROTO_BAD,
    PROTO_V1,
    PROTO_V2,
    TS,
    Schemas,
    classes,
    everything,
    frame,
    proto_spec,
    stamp,
)


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
