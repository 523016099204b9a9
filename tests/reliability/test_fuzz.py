"""Fuzzed payloads and fuzzed specs (hypothesis): never a crash without a clear message, never
a record lost.

- payloads: arbitrary bytes, near-valid JSON clicks (fields dropped, retyped, stretched,
  injected), empty values and tombstones go through the product's Decoder in batches; every
  offset ends exactly once in `valid` or `invalid`, and an invalid record keeps its original
  bytes. A sample of the same payloads then goes through the real broker and a real landing:
  consumed = landed + quarantined, and the lake and quarantine hold each offset once.
- specs: the demo spec with values replaced, removed or added at random places, written as
  YAML and parsed with `parse_spec_file`; the only failure allowed is SpecError, and its
  message names the file.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.flows import land
from connectors.formats import Batch, Decoder
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec, SpecError, parse_spec_file
from examples.demo_data import produce
from tests.support.reliability import ROOT, audit_lake, clicks
from tests.support.reliability_table import iterations, record

GOOD = {
    "event_id": "e-1",
    "user_id": "u-1",
    "partner_id": "p-001",
    "ad_id": "ad-1",
    "kind": "click",
    "cost_micros": 5,
    "event_time": "2026-11-26T10:00:00Z",
}
NASTY_TEXT = st.sampled_from(
    [
        "",
        "\x00",
        "ü",
        "\ud7ff",
        "'; DROP TABLE clicks; --",
        "../../etc/passwd",
        "__import__('os').system('id')",
        "9" * 400,
        "-1",
        "NaN",
        "1e309",
        "2026-13-45T99:99:99Z",
        "\n",
        '"',
        "\\u0000",
    ]
)
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=30)
    | NASTY_TEXT,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def near_valid(draw) -> bytes:
    record = dict(GOOD)
    for name in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=3, unique=True)):
        action = draw(st.sampled_from(["drop", "retype", "nasty"]))
        if action == "drop":
            record.pop(name)
        elif action == "retype":
            record[name] = draw(JSONISH)
        else:
            record[name] = draw(NASTY_TEXT)
    if draw(st.booleans()):
        record[draw(st.text(max_size=10))] = draw(JSONISH)
    text = json.dumps(record, allow_nan=True)
    return draw(
        st.sampled_from(
            [
                text.encode(),
                text.encode("utf-16"),
                text[: max(1, len(text) // 2)].encode(),
                text.encode() + b"\n" + text.encode(),
                b" " + text.encode() + b" ",
            ]
        )
    )


PAYLOAD = st.one_of(
    st.binary(max_size=200),
    near_valid(),
    near_valid(),
    st.just(b""),
    st.none(),
    JSONISH.map(lambda v: json.dumps(v).encode()),
)


def _check_batch(decoder: Decoder, values: list) -> tuple[int, int]:
    n = len(values)
    batch = Batch(
        partition=0,
        values=values,
        keys=[f"k{i}".encode() for i in range(n)],
        offsets=list(range(100, 100 + n)),
        timestamps=[1_764_151_200_000] * n,
    )
    decoded = decoder.decode(batch)
    valid = decoded.valid.column("_offset").to_pylist()
    invalid = decoded.invalid.column("_offset").to_pylist()
    assert Counter(valid + invalid) == Counter(batch.offsets), (
        "an offset was lost or doubled by decoding"
    )
    assert len(decoded.hours) == len(valid)
    for off, raw, err in zip(
        invalid,
        decoded.invalid.column("_raw").to_pylist(),
        decoded.invalid.column("_error").to_pylist(),
        strict=True,
    ):
        original = values[off - 100]
        assert err, "a quarantined record without a reason"
        assert raw == original or (original in (None, b"") and raw in (None, b"")), (
            "_raw differs from the value"
        )
    return len(valid), len(invalid)


def test_fuzzed_payloads_are_landed_or_quarantined_never_lost(topic, kafka_bootstrap, tmp_path):
    spec = clicks(topic)
    decoder = Decoder(spec, topic)
    sample: list[bytes | None] = []
    totals = Counter()
    examples = iterations(quick=60, full=500)

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(PAYLOAD, min_size=1, max_size=40))
    def decode_any(values):
        v, i = _check_batch(decoder, values)
        totals.update(valid=v, invalid=i, records=len(values))
        if len(sample) < 400:
            sample.extend(values[: 400 - len(sample)])

    decode_any()
    assert totals["valid"] > 0 and totals["invalid"] > 0, totals  # both paths were exercised

    # A sample through the real broker and a real landing.
    produce(
        kafka_bootstrap,
        topic,
        [(f"f{i}".encode(), v, False) for i, v in enumerate(sample)],
        partitions=2,
    )
    result = land(
        spec,
        lake=Lake(str(tmp_path / "lake")),
        metastore=Metastore(f"sqlite:///{tmp_path / 'm.db'}"),
        bootstrap=kafka_bootstrap,
        idle_timeout_s=5,
    )
    assert result.consumed == len(sample)
    assert result.consumed == result.landed + result.quarantined
    a = audit_lake(tmp_path / "lake", spec.name, kafka_bootstrap, topic, 2)
    assert a.exact, a
    record(
        "fuzzed payloads (decoder + broker sample)",
        examples,
        totals["records"] + a.records,
        a.lost,
        a.duplicated,
        examples,
        f"{totals['invalid']} quarantined by the decoder; {len(sample)} through the broker",
    )


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


BASE_SPEC = yaml.safe_load((ROOT / "dataproducts" / "clicks.yaml").read_text())
ALL_PATHS = [p for p in _paths(BASE_SPEC) if p]
SPEC_VALUES = JSONISH | st.sampled_from(
    [
        "users; DROP TABLE x",
        'a"b',
        "../x",
        "1h",
        "-5m",
        "P1D",
        "0",
        "clicks",
        "string",
        "int64",
        "timestamp",
        "kafka_timestamp",
        "tombstone",
        "none",
    ]
)


@st.composite
def mutated_spec(draw) -> dict:
    data = copy.deepcopy(BASE_SPEC)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = data
        try:
            for k in path[:-1]:
                parent = parent[k]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(SPEC_VALUES)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(SPEC_VALUES)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed the way there
    return data


def test_fuzzed_specs_fail_only_with_a_clear_spec_error(tmp_path):
    outcomes = Counter()
    examples = iterations(quick=150, full=1000)
    folder = tmp_path / "specs"
    folder.mkdir()

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutated_spec())
    def parse_any(data):
        name = data.get("name") if isinstance(data, dict) else None
        stem = (
            name
            if isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,40}", name)
            else "fuzz"
        )
        sub = folder / uuid.uuid4().hex[:8]
        sub.mkdir()
        path = sub / f"{stem}.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        try:
            spec = parse_spec_file(path)
        except SpecError as exc:
            text = str(exc)
            assert path.name in text and text.strip(), text
            assert "Traceback" not in text
            outcomes["rejected"] += 1
            return
        assert isinstance(spec, DataProductSpec)
        outcomes["accepted"] += 1

    parse_any()
    assert outcomes["rejected"] > 0 and outcomes["accepted"] > 0, outcomes
    record(
        "fuzzed specs (parse_spec_file)",
        examples,
        0,
        0,
        0,
        examples,
        f"{outcomes['rejected']} rejected with SpecError naming the file, {outcomes['accepted']} accepted",
    )


def test_unreadable_spec_files_say_so(tmp_path):
    for name, content in {
        "bad.yaml": b"\xff\xfe\x00garbage",
        "list.yaml": b"- 1\n- 2\n",
        "tabs.yaml": b"a:\n\t- b",
    }.items():
        path = Path(tmp_path / name)
        path.write_bytes(content)
        try:
            parse_spec_file(path)
        except SpecError as exc:
            assert name in str(exc)
        else:
            raise AssertionError(f"{name} parsed")


# --- the Confluent wire format: format avro and protobuf ---------------------------------------


def _wire_seeds(fmt: str) -> list[bytes]:
    from examples.demo_data import encode_clicks, generate_clicks

    return [v for _, v, _ in encode_clicks(generate_clicks(30, 1, 0.0, seed=11), fmt)]


@st.composite
def wire_payload(draw, seeds: list[bytes]) -> bytes | None:
    """A real record of schema id 1, 2 or 3, mutated: bits flipped, cut, extended, re-labelled
    with another known id, or random bytes behind a known id's header; also tombstones, empty
    values and bytes without the magic byte."""
    value = bytearray(draw(st.sampled_from(seeds)))
    action = draw(st.sampled_from(["keep", "flip", "cut", "extend", "relabel", "random", "raw", "none", "empty"]))
    if action == "flip":
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(5, len(value) - 1))
            value[pos] ^= 1 << draw(st.integers(0, 7))
    elif action == "cut":
        value = value[: draw(st.integers(0, len(value) - 1))]
    elif action == "extend":
        value += draw(st.binary(min_size=1, max_size=20))
    elif action == "relabel":
        value[1:5] = draw(st.integers(1, 3)).to_bytes(4, "big")
    elif action == "random":
        value = bytearray(b"\x00" + draw(st.integers(1, 3)).to_bytes(4, "big") + draw(st.binary(max_size=60)))
    elif action == "raw":
        value = bytearray(b"\x01" + draw(st.binary(max_size=60)))
    elif action == "none":
        return None
    elif action == "empty":
        return b""
    return bytes(value)


@pytest.mark.parametrize("fmt", ["avro", "protobuf"])
def test_fuzzed_wire_format_payloads_are_landed_or_quarantined_never_lost(fmt, make_topic, kafka_bootstrap, tmp_path):
    from connectors.formats import decoder_for
    from connectors.formats.registry import SchemaUnavailableError

    examples = iterations(quick=40, full=400)
    topic = make_topic(2)
    product = {"avro": "clicks_avro", "protobuf": "clicks_proto"}[fmt]
    spec = parse_spec_file(ROOT / "dataproducts" / f"{product}.yaml").model_copy(update={"topic": topic})
    decoder = decoder_for(spec, topic)
    seeds = _wire_seeds(fmt)
    assert _check_batch(decoder, list(seeds)) == (len(seeds), 0)  # unmutated: every one lands
    sample: list[bytes | None] = []
    totals = Counter()

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(wire_payload(seeds), min_size=1, max_size=40))
    def decode_any(values):
        v, i = _check_batch(decoder, values)
        totals.update(valid=v, invalid=i, records=len(values))
        if len(sample) < 300:
            sample.extend(values[: 300 - len(sample)])

    decode_any()
    assert totals["valid"] > 0 and totals["invalid"] > 0, totals

    # An id no source knows is no record's fault: the batch stops, nothing is quarantined.
    with pytest.raises(SchemaUnavailableError):
        _check_batch(decoder, [seeds[0], b"\x00\x00\x01\x00\x00" + seeds[0][5:]])

    produce(kafka_bootstrap, topic, [(f"f{i}".encode(), v, False) for i, v in enumerate(sample)], partitions=2)
    result = land(spec, lake=Lake(str(tmp_path / "lake")), metastore=Metastore(f"sqlite:///{tmp_path / 'm.db'}"),
                  bootstrap=kafka_bootstrap, idle_timeout_s=5)
    assert result.consumed == len(sample) == result.landed + result.quarantined
    a = audit_lake(tmp_path / "lake", spec.name, kafka_bootstrap, topic, 2)
    assert a.exact, a
    record(f"fuzzed {fmt} wire-format payloads (decoder + broker sample)", examples,
           totals["records"] + a.records, a.lost, a.duplicated, examples,
           f"{totals['invalid']} quarantined by the decoder; {len(sample)} through the broker")
