"""The change events' hand-rendered row JSON is json.dumps's, byte for byte."""

from __future__ import annotations

import json

import pytest

from connectors.sources.cdc import pgoutput as pgo
from connectors.sources.cdc.events import _row_json, key_text, row_image
from connectors.sources.cdc.types import to_json_value

TRICKY = ["plain", 'quote " and \\ backslash', "new\nline\ttab", "héllo ☃", "\u2028\u2029", "\x00\x1f", "",
          0, -1, 2**63 - 1, 2**70, True, False, None, 0.1, -0.0, 1e308, 5e-324, "NaN", [1, None, ["a b", 2.5]]]


@pytest.mark.parametrize("value", TRICKY, ids=repr)
def test_a_row_image_renders_as_json_dumps_does(value):
    row = {"id": 1, "côlumn \"x\"": value}
    assert _row_json(row) == json.dumps(row, separators=(",", ":"), ensure_ascii=False)


def test_a_missing_image_is_null():
    assert _row_json(None) == "null"


@pytest.mark.parametrize("value", [0, -5, 2**70, True, 1.5, "k", [1, 2]], ids=repr)
def test_a_single_column_key_reads_as_before(value):
    expected = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    assert key_text(["k"], {"k": value}) == expected


def test_row_image_converts_each_column_by_its_type_and_sets_unchanged_toast_apart():
    rel = pgo.Relation(7, "public", "t", "d", (pgo.Column("id", 20, -1, True), pgo.Column("ok", 16, -1, False),
                                               pgo.Column("tags", 1009, -1, False), pgo.Column("blob", 25, -1, False),
                                               pgo.Column("n", 1700, -1, False)))
    values = ("42", "t", '{"a b",c,NULL}', pgo.UNCHANGED_TOAST, None)
    image, unchanged = row_image(rel, values)
    assert image == {"id": 42, "ok": True, "tags": ["a b", "c", None], "n": None}
    assert unchanged == ["blob"]
    assert [to_json_value(v, c.type_oid) for c, v in zip(rel.columns, values, strict=True) if v is not pgo.UNCHANGED_TOAST] == \
        list(image.values())
