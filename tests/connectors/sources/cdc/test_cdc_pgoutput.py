"""The pgoutput decoder on hand-built messages (the byte layout of the PostgreSQL docs'
"Logical Replication Message Formats"), the text → JSON type mapping, and the spec."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.sources.cdc import pgoutput as pgo
from connectors.sources.cdc.spec import CdcSourceSpec, parse_size
from connectors.sources.cdc.types import to_json_value, type_name

REPO = Path(__file__).resolve().parents[4]
PG_2026 = int((datetime(2026, 11, 30, 10, 0, tzinfo=UTC) - pgo.PG_EPOCH).total_seconds() * 1_000_000)


def s(text: str) -> bytes:
    return text.encode() + b"\0"


def tup(*cols) -> bytes:
    out = struct.pack("!h", len(cols))
    for c in cols:
        if c is None:
            out += b"n"
        elif c is pgo.UNCHANGED_TOAST:
            out += b"u"
        elif isinstance(c, bytes):
            out += b"b" + struct.pack("!i", len(c)) + c
        else:
            raw = c.encode()
            out += b"t" + struct.pack("!i", len(raw)) + raw
    return out


def test_every_message_type():
    assert pgo.decode(b"B" + struct.pack("!QqI", 0x16B3748, PG_2026, 771)) == pgo.Begin(
        0x16B3748, datetime(2026, 11, 30, 10, 0, tzinfo=UTC), 771)
    c = pgo.decode(b"C" + struct.pack("!bQQq", 0, 10, 20, PG_2026))
    assert (c.commit_lsn, c.end_lsn, c.commit_time.hour) == (10, 20, 10)
    rel = pgo.decode(b"R" + struct.pack("!I", 16384) + s("public") + s("orders") + b"d" + struct.pack("!h", 2)
                     + struct.pack("!b", 1) + s("id") + struct.pack("!Ii", 20, -1)
                     + struct.pack("!b", 0) + s("note") + struct.pack("!Ii", 25, -1))
    assert rel.qualified == "public.orders" and rel.replica_identity == "d"
    assert [(c.name, c.type_oid, c.part_of_key) for c in rel.columns] == [("id", 20, True), ("note", 25, False)]
    assert pgo.decode(b"Y" + struct.pack("!I", 99999) + s("public") + s("mood")) == pgo.TypeMessage(99999, "public", "mood")
    assert pgo.decode(b"O" + struct.pack("!Q", 5) + s("node1")) == pgo.Origin(5, "node1")
    ins = pgo.decode(b"I" + struct.pack("!I", 16384) + b"N" + tup("1", None))
    assert ins == pgo.Insert(16384, ("1", None))
    upd = pgo.decode(b"U" + struct.pack("!I", 16384) + b"K" + tup("1", None) + b"N" + tup("2", pgo.UNCHANGED_TOAST))
    assert upd.old_key == ("1", None) and upd.new == ("2", pgo.UNCHANGED_TOAST) and upd.old is None
    full = pgo.decode(b"U" + struct.pack("!I", 16384) + b"O" + tup("1", "a") + b"N" + tup("1", "b"))
    assert full.old == ("1", "a")
    plain = pgo.decode(b"U" + struct.pack("!I", 16384) + b"N" + tup("1", b"\x00\x01"))
    assert plain.old is None and plain.old_key is None and plain.new == ("1", b"\x00\x01")
    assert pgo.decode(b"D" + struct.pack("!I", 16384) + b"K" + tup("1", None)).old_key == ("1", None)
    assert pgo.decode(b"D" + struct.pack("!I", 16384) + b"O" + tup("1", "x")).old == ("1", "x")
    t = pgo.decode(b"T" + struct.pack("!ib", 2, 3) + struct.pack("!II", 1, 2))
    assert t == pgo.Truncate((1, 2), True, True)
    m = pgo.decode(b"M" + struct.pack("!bQ", 1, 42) + s("app") + struct.pack("!i", 3) + b"hey")
    assert (m.transactional, m.lsn, m.prefix, m.content) == (True, 42, "app", b"hey")


@pytest.mark.parametrize("payload, message", [
    (b"", "empty message"),
    (b"Z", "unknown pgoutput message type 'Z'"),
    (b"B\x00\x01", "message ends early"),
    (b"I" + struct.pack("!I", 1) + b"X", "Insert without its new tuple"),
    (b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!h", 1) + b"t" + struct.pack("!i", 99) + b"ab", "runs past"),
    (b"R" + struct.pack("!I", 1) + b"no-terminator", "terminating NUL"),
])
def test_malformed_messages_say_what_is_wrong(payload, message):
    with pytest.raises(pgo.DecodeError, match=message):
        pgo.decode(payload)


def test_lsn_text_round_trip():
    assert pgo.lsn_text(0x16_B374D848) == "16/B374D848"
    assert pgo.parse_lsn("16/B374D848") == 0x16_B374D848


@pytest.mark.parametrize("text, oid, expected", [
    ("t", 16, True), ("true", 16, True), ("f", 16, False),
    ("9223372036854775807", 20, 9223372036854775807),
    ("0.1", 701, 0.1), ("NaN", 701, "NaN"), ("-Infinity", 700, "-Infinity"),
    ("123456789012345678901234567890.000000001", 1700, "123456789012345678901234567890.000000001"),
    ("2026-11-30 10:00:00+00", 1184, "2026-11-30T10:00:00.000000Z"),
    ("2026-11-30 10:00:00.5+00", 1184, "2026-11-30T10:00:00.500000Z"),
    ("2026-11-30 12:00:00+02", 1184, "2026-11-30T12:00:00+02:00"),  # only when the session is not UTC
    ("infinity", 1184, "infinity"),
    ("2026-11-30 10:00:00.25", 1114, "2026-11-30T10:00:00.25"),
    ("\\x00ff", 17, "AP8="),
    ('{"a": 1}', 3802, '{"a": 1}'),
    ("{1,NULL,3}", 1007, [1, None, 3]),
    ('{"a b","c\\"d",NULL,"NULL"}', 1009, ["a b", 'c"d', None, "NULL"]),
    ("{{1.5,2},{3,NaN}}", 1231, [["1.5", "2"], ["3", "NaN"]]),
    ("[0:1]={7,8}", 1007, [7, 8]),
    ("{}", 1009, []),
    ("{t,f}", 1000, [True, False]),
    ("192.168.0.1/32", 869, "192.168.0.1/32"),
    (None, 25, None),
])
def test_type_mapping(text, oid, expected):
    assert to_json_value(text, oid) == expected


def test_type_names_and_sizes_and_spec_defaults():
    assert type_name(1009) == "text[]" and type_name(1700) == "numeric" and type_name(99999) == "type 99999"
    assert parse_size("1GB") == 1024**3 and parse_size("512 MB") == 512 * 1024**2 and parse_size(10) == 10
    with pytest.raises(ValueError):
        parse_size("lots")
    spec = CdcSourceSpec.model_validate({"name": "shop_orders", "product": "orders", "mode": "cdc",
                                         "connection": {"url": "postgresql://u:secret@h/db"}, "table": "orders"})
    assert spec.slot_name == spec.publication_name == "flowsuite_shop_orders"
    assert spec.qualified_table == "public.orders" and spec.max_retained_wal == 1024**3
    with pytest.raises(ValueError, match="slot name"):
        CdcSourceSpec.model_validate({**spec.model_dump(by_alias=True), "slot": "Bad-Slot"})


def test_cdc_declarations_are_checked_against_their_product(tmp_path):
    from connectors.sources import load_sources
    from connectors.spec import SpecError, load_specs

    products = load_specs(REPO / "dataproducts")
    (tmp_path / "sources").mkdir()
    for p in products:
        if p.name == "orders":
            (tmp_path / "orders.yaml").write_text((REPO / "dataproducts" / "orders.yaml").read_text()
                                                  .replace("data_layout: debezium", "data_layout: record"))
    (tmp_path / "sources" / "orders.yaml").write_text((REPO / "dataproducts" / "sources" / "orders.yaml").read_text())
    with pytest.raises(SpecError, match="must set cloudevents.data_layout: debezium"):
        load_sources(tmp_path, load_specs(tmp_path))
    (tmp_path / "sources" / "orders.yaml").write_text("name: shop_orders\nproduct: orders\nmode: cdc\n"
                                                      "connection: {url: 'postgresql://h/db'}\ntable: orders\nslot: Bad\n")
    with pytest.raises(SpecError, match=r"sources/orders.yaml at slot: slot name 'Bad'"):
        load_sources(tmp_path, load_specs(tmp_path))
