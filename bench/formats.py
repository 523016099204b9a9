"""Avro in the Confluent wire format: decoding against fastavro alone, landing against the bare
consume loop, over the same payloads and the same topic in the same run.

    python -m bench.formats [--events 300000] [--repeat 2]

- decode (CPU time of this process, interleaved, best of 3: a loaded machine's other work
  does not count): `AvroDecoder.decode` over batches of 10,000 values (header, schema id, fastavro,
  Arrow columns, the spec's rules, event-time hours, provenance) vs fastavro alone: its
  schemaless reader over each payload after the 5-byte header with the writer schema of its id,
  the least any Python consumer of these records does. Three writer schema versions, mixed.
- the same for Protobuf (`clicks_proto`) against protobuf's `FromString` alone (upb), which
  parses without building Python objects per field: the ratio says what reading the fields costs;
  and against FromString plus reading every field the spec names into a list per column (what a
  consumer that uses the values cannot avoid): the ratio says what Arrow, the rules and the
  provenance cost on top (goal >= 0.8, as for Avro against fastavro, which builds a dict per record);
- landing: `land` of the `clicks_avro` product vs a bare `consume()` loop touching each value
  (bench/landing.py's ceiling), on an embedded Tansu broker.

Absolute figures drift on shared machines; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.landing import _machine, bare_consume, land_once
from bench.stats import print_rows, ratio_row
from connectors.formats import Batch
from connectors.formats.avro import AvroDecoder
from connectors.spec import parse_spec_file
from examples.demo_data import encode_clicks, generate_clicks, produce
from orchestration.services.broker import running_broker

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "bench" / "results"
BATCH = 10_000


# The decode comparisons are single-threaded and CPU-bound: they are timed in this process's CPU
# time, which other work on a shared machine does not inflate, and interleaved, best of ROUNDS.
clock = time.process_time
ROUNDS = 3


def fastavro_alone(values: list[bytes], schemas: dict) -> float:
    from fastavro import schemaless_reader

    started = clock()
    for v in values:
        fo = io.BytesIO(v)
        fo.seek(5)
        schemaless_reader(fo, schemas[int.from_bytes(v[1:5], "big")], None)
    return clock() - started


def protobuf_alone(values: list[bytes], classes: dict) -> float:
    started = clock()
    for v in values:
        classes[int.from_bytes(v[1:5], "big")].FromString(v[6:])  # header and the lone index 0
    return clock() - started


def protobuf_fields(values: list[bytes], classes: dict, paths: list[list[str]]) -> float:
    """FromString, then every field the spec names that the writer schema has read into a Python
    list per column (a list comprehension per column, as a consumer that uses the fields writes
    it; a Timestamp as its seconds and nanos): the least a reader that needs the values does —
    no Arrow, no rules, no provenance."""
    from operator import attrgetter

    def has(desc, path: list[str]) -> bool:
        for name in path:
            field = desc.fields_by_name.get(name) if desc is not None else None
            if field is None:
                return False
            desc = field.message_type
        return True

    readers = {sid: [(attrgetter(".".join(p)), cls.DESCRIPTOR.fields_by_name[p[0]].message_type is not None and len(p) == 1)
                     for p in paths if has(cls.DESCRIPTOR, p)] for sid, cls in classes.items()}
    started = clock()
    for i in range(0, len(values), BATCH):
        by_sid: dict[int, list] = {}
        for v in values[i:i + BATCH]:
            sid = int.from_bytes(v[1:5], "big")
            by_sid.setdefault(sid, []).append(classes[sid].FromString(v[6:]))
        for sid, messages in by_sid.items():
            for get, is_message in readers[sid]:
                column = [get(m) for m in messages]
                if is_message:  # google.protobuf.Timestamp
                    [t.seconds * 1_000_000 + t.nanos // 1000 for t in column]  # the conversion is timed
    return clock() - started


def decoder_time(spec, values: list[bytes], keys: list[bytes], decoder_class=AvroDecoder) -> float:
    decoder = decoder_class(spec)
    ts = [1_764_000_000_000] * BATCH
    batches = [Batch(0, values[i:i + BATCH], keys[i:i + BATCH], list(range(i, i + len(values[i:i + BATCH]))),
                     ts[: len(values[i:i + BATCH])]) for i in range(0, len(values), BATCH)]
    decoder.decode(batches[0])  # the writer schemas, fetched once per id, off the clock
    started = clock()
    rows = 0
    for b in batches:
        decoded = decoder.decode(b)
        rows += decoded.consumed
    elapsed = clock() - started
    assert rows == len(values)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)  # fastavro reads ~20-30k records/s here
    parser.add_argument("--hours", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=2, help="best of N for each measurement")
    args = parser.parse_args()

    from fastavro import parse_schema

    spec = parse_spec_file(ROOT / "dataproducts" / "clicks_avro.yaml")
    topic = f"bench-clicks-avro-{os.getpid()}"
    spec = spec.model_copy(update={"topic": topic})
    schemas_dir = ROOT / "dataproducts" / "schemas"
    writer = {sid: parse_schema(json.loads((schemas_dir / name).read_text())) for sid, name in spec.schemas.files.items()}

    records = list(encode_clicks(generate_clicks(args.events, args.hours, 0.0, seed=7), "avro", schemas_dir))
    keys = [k for k, _, _ in records]
    values = [v for _, v, _ in records]
    n = len(values)
    rows: list[dict] = []

    rounds = [(fastavro_alone(values, writer), decoder_time(spec, values, keys)) for _ in range(max(ROUNDS, args.repeat))]
    rows.append(ratio_row("Avro decode to Arrow vs fastavro alone", [n / o for _, o in rounds],
                          [n / a for a, _ in rounds], ">= 0.8", "records/s"))

    from google.protobuf import message_factory

    from connectors.formats.protobuf import ProtobufDecoder, compile_proto
    from connectors.formats.registry import FileSchemas

    proto_spec = parse_spec_file(ROOT / "dataproducts" / "clicks_proto.yaml")
    files = FileSchemas(proto_spec.schemas.files, schemas_dir, "protobuf")
    classes = {sid: message_factory.GetMessageClass(compile_proto(files.get(sid)).message_types_by_name["Click"])
               for sid in proto_spec.schemas.files}
    pvalues = [v for _, v, _ in encode_clicks(generate_clicks(args.events, args.hours, 0.0, seed=7), "protobuf", schemas_dir)]
    rounds = [(protobuf_alone(pvalues, classes), decoder_time(proto_spec, pvalues, keys, ProtobufDecoder))
              for _ in range(max(ROUNDS, args.repeat))]
    rows.append(ratio_row("Protobuf decode to Arrow vs FromString alone", [n / o for _, o in rounds],
                          [n / a for a, _ in rounds], None, "records/s"))
    paths = [(f.path or f.name).split(".") for f in proto_spec.fields]
    rounds = [(protobuf_fields(pvalues, classes, paths), decoder_time(proto_spec, pvalues, keys, ProtobufDecoder))
              for _ in range(max(ROUNDS, args.repeat))]
    rows.append(ratio_row("Protobuf decode to Arrow vs FromString + reading the spec's fields", [n / o for _, o in rounds],
                          [n / a for a, _ in rounds], ">= 0.8", "records/s"))

    with running_broker() as broker:
        bootstrap = broker.bootstrap
        report = produce(bootstrap, topic, records, partitions=1)
        print(f"produced {report.produced:,} Avro events into {topic} (3 writer schema versions)", flush=True)
        bare, landing = [], []
        lake_root = Path(tempfile.mkdtemp(prefix="bench-lake-"))
        try:
            for i in range(max(ROUNDS, args.repeat)):  # interleaved: bare loop and landing back to back
                bare.append(bare_consume(bootstrap, topic, 1, report.produced))
                landing.append(land_once(spec, bootstrap, str(lake_root / f"lake{i}"))[0])
        finally:
            shutil.rmtree(lake_root, ignore_errors=True)
        rows.append(ratio_row("Avro landing vs bare consume loop", [n / t for t in landing], [n / t for t in bare],
                              None, "records/s"))

    print()
    print_rows(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "formats.json").write_text(json.dumps({"bench": "formats", "events": n, "machine": _machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
