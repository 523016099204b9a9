"""History from the lake (connectors/gateway/history.py): the rows of an offset window read back
from the live files equal, column for column and type for type, what the landing's decoder makes
of the same offsets read from Kafka — after landing, after compaction, while a compaction swaps
the files under the read, and for a topic whose early offsets the broker no longer has."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.flows import compact_hour
from connectors.formats import Batch, decoder_for
from connectors.gateway.events import events_from_batch
from connectors.gateway.history import (
    HistoryError,
    LakeSpan,
    events_from_history,
    lake_span,
    read_history,
)
from connectors.kafka import ensure_topic
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.settings import REPO_ROOT
from connectors.spec import parse_spec_file
from examples.demo_data import encode_clicks, generate_clicks, produce
from tests.support import read_messages
from tests.support.gateway import (
    clicks_flow_spec,
    decode_from_kafka,
    land_all,
    produce_history,
)
from tests.support.runs import run_at
from tests.support.s3 import env_lake
from tests.support.tansu import S3Broker

LATER = datetime(2027, 1, 1, tzinfo=UTC)
SHIPPED = REPO_ROOT / "dataproducts"  # every hour of the test is closed by then


def window(table: pa.Table, start: int, end: int) -> pa.Table:
    offs = table.column("_offset")
    return table.filter(pc.and_(pc.greater_equal(offs, start), pc.less(offs, end)))


def history(lake, metastore, spec, partition, start, end, max_rows) -> pa.Table:
    tables = list(read_history(lake, metastore, spec, partition, start, end, max_rows=max_rows))
    assert all(0 < t.num_rows <= max_rows for t in tables), [t.num_rows for t in tables]
    if not tables:
        return window(decoder_for(spec).decode(Batch(partition, [], [], [], [])).valid, 0, 0)
    out = pa.concat_tables(tables)
    offs = out.column("_offset").to_numpy()
    assert (offs[1:] > offs[:-1]).all(), "offsets strictly increasing across tables"
    return out


def assert_same(got: pa.Table, expected: pa.Table) -> None:
    assert got.schema == expected.schema, f"{got.schema}\n!=\n{expected.schema}"
    assert got.num_rows == expected.num_rows
    assert got.equals(expected.combine_chunks()), "rows differ"


def compact_all(spec, lake, metastore) -> None:
    for hour in sorted({f.hour for f in metastore.live_files(spec.name)}):
        compact_hour(spec, hour, run_at(lake=lake, metastore=metastore, run_id="compaction", now=LATER))
    kinds = {f.kind for f in metastore.live_files(spec.name)}
    assert kinds == {"compacted"}, kinds


def small_groups(topic: str):
    """The clicks product with row groups of 1,000 rows, so a window crosses several of them."""
    spec = clicks_flow_spec(topic)
    return spec.model_copy(update={"sinks": spec.sinks.model_copy(update={
        "lake": spec.sinks.lake.model_copy(update={"row_group_rows": 1000})})})


@pytest.fixture
def landed(tmp_path: Path, kafka_bootstrap: str, make_topic):
    topic = make_topic(partitions=2)
    spec = small_groups(topic)
    produce_history(kafka_bootstrap, topic, 6000)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    land_all(spec, lake, metastore, kafka_bootstrap, runs_of=1400)
    expected = {p: decode_from_kafka(kafka_bootstrap, spec, p) for p in (0, 1)}
    assert all(0 < expected[p].num_rows < 3000 for p in (0, 1))  # some were quarantined
    yield spec, lake, metastore, expected
    metastore.dispose()


WINDOWS = [(0, 3000, 1000), (0, 3000, 333), (137, 2417, 450), (2999, 3000, 10), (1500, 1500, 10), (2990, 9000, 7)]


def test_history_equals_the_decode_from_kafka_after_landing_and_after_compaction(landed):
    spec, lake, metastore, expected = landed
    live = metastore.live_files(spec.name)
    assert len({f.hour for f in live}) >= 3 and len(live) > 6  # several runs × hours × partitions
    for stage in ("landed", "compacted"):
        for p in (0, 1):
            assert lake_span(metastore, spec.name, p) == LakeSpan(0, 3000), stage
            for start, end, max_rows in WINDOWS:
                got = history(lake, metastore, spec, p, start, end, max_rows)
                assert_same(got, window(expected[p], start, end))
        if stage == "landed":
            compact_all(spec, lake, metastore)


def test_history_reads_only_the_files_of_its_window(landed):
    spec, lake, metastore, expected = landed
    files = sorted((f for f in metastore.live_files(spec.name) if f.partition == 0), key=lambda f: f.max_offset)
    last = files[-1]
    (Path(lake.full(last.path))).unlink()  # gone from disk, still live in the metastore
    below = min(f.min_offset for f in files if f.max_offset >= last.min_offset)
    got = history(lake, metastore, spec, 0, 0, below, 500)
    assert_same(got, window(expected[0], 0, below))
    with pytest.raises(HistoryError, match=r"clicks\[0\]: the lake's files of offsets"):
        list(read_history(lake, metastore, spec, 0, 0, 3000, max_rows=500))


@pytest.mark.parametrize("hours", ["all", "one"])
def test_history_continues_across_a_compaction_that_swaps_the_files_under_it(landed, hours):
    spec, lake, metastore, expected = landed
    tables = read_history(lake, metastore, spec, 1, 0, 3000, max_rows=60)
    first = next(tables)
    if hours == "all":
        compact_all(spec, lake, metastore)  # deletes every landed file the reader was reading
    else:  # one hour swapped, its neighbours' landed files stay live: both kinds in one slice
        hour = sorted({f.hour for f in metastore.live_files(spec.name)})[2]
        compact_hour(spec, hour, run_at(lake=lake, metastore=metastore, run_id="compaction", now=LATER))
    rest = list(tables)
    assert_same(pa.concat_tables([first, *rest]), window(expected[1], 0, 3000))


def test_lake_span_ends_where_the_landing_commits_stop_being_unbroken(landed, kafka_bootstrap):
    spec, lake, metastore, expected = landed
    produce_history(kafka_bootstrap, spec.topic, 200, seed=8)  # offsets 3000..3099 of each partition
    metastore.reset_offset(spec.name, spec.topic, 0, 3040, run_id="operator")  # 3000..3039 skipped
    assert lake_span(metastore, spec.name, 0) is None  # nothing landed since the reset
    land_all(spec, lake, metastore, kafka_bootstrap, runs_of=1400)
    span = lake_span(metastore, spec.name, 0)
    assert span is not None and span.end == 3100
    assert 3040 <= span.first == pc.min(window(decode_from_kafka(kafka_bootstrap, spec, 0, 3040), 0, 3100)
                                       .column("_offset")).as_py()  # not 0: the lake has a hole below 3040
    assert lake_span(metastore, spec.name, 1) == LakeSpan(0, 3100)


# --- a topic whose early offsets the broker no longer has ------------------------------------


def test_truncated_topic_is_served_from_the_lake_then_kafka_without_gap_or_double(broker: S3Broker, tmp_path,
                                                                                 s3_lake_url):
    topic = f"test.history.{random.randrange(1 << 30):x}"
    ensure_topic(broker.bootstrap, topic, 1)
    spec = clicks_flow_spec(topic)
    produce_history(broker.bootstrap, topic, 120, partitions=1)
    assert broker.batches(topic, 0)[:6] == [0, 10, 20, 30, 40, 50]
    before = decode_from_kafka(broker.bootstrap, spec, 0)
    lake, metastore = env_lake(s3_lake_url), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")  # the lake on S3 too
    land_all(spec, lake, metastore, broker.bootstrap, runs_of=70)

    low = broker.truncate(topic, {0: 50})[0]
    assert low == 50
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t"})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[0] == 50
    finally:
        consumer.close()
    from_kafka = decode_from_kafka(broker.bootstrap, spec, 0)  # asked from 0: the broker starts at 50, silently
    assert from_kafka.column("_offset")[0].as_py() >= 50 and window(before, 0, 50).num_rows > 40

    span = lake_span(metastore, spec.name, 0)
    assert span == LakeSpan(0, 120)
    from_lake = history(lake, metastore, spec, 0, span.first, low, 16)
    assert_same(pa.concat_tables([from_lake, window(from_kafka, low, 120)]), before)
    metastore.dispose()


def kafka_events(bootstrap: str, spec, partition: int) -> list:
    """The events a read of the whole partition from Kafka makes (push's and pull's path)."""
    msgs = [m for m in read_messages(bootstrap, spec.topic, partition + 1) if m.partition() == partition]
    decoder = decoder_for(spec)
    decoded = decoder.decode(Batch(partition, [m.value() for m in msgs], [m.key() for m in msgs],
                                   [m.offset() for m in msgs], [m.timestamp()[1] for m in msgs],
                                   [m.headers() for m in msgs] if decoder.needs_headers else None))
    return events_from_batch(spec, partition, {m.offset(): m for m in msgs}, decoded.valid, "https://x/schema")


@pytest.mark.parametrize("fmt, product", [("avro", "clicks_avro"), ("protobuf", "clicks_proto")])
def test_history_of_a_wire_format_product_equals_its_decode(fmt, product, tmp_path, kafka_bootstrap, make_topic):
    """Avro and protobuf products (three writer schemas, flattened fields, wire faults): the
    lake's rows are the decoder's, so every format can be replayed from the lake — and the
    events built from them (push's and pull's history) are those of a Kafka read, byte for byte."""
    topic = make_topic(partitions=2)
    spec = parse_spec_file(SHIPPED / f"{product}.yaml").model_copy(update={"topic": topic})
    records = list(encode_clicks(generate_clicks(900, 2, 0.05, seed=11, now=datetime(2026, 11, 30, 11, 30, tzinfo=UTC)), fmt))
    produce(kafka_bootstrap, topic, records, partitions=2)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    land_all(spec, lake, metastore, kafka_bootstrap, runs_of=300)
    for stage in ("landed", "compacted"):
        for p in (0, 1):
            expected = decode_from_kafka(kafka_bootstrap, spec, p)
            end = lake_span(metastore, spec.name, p).end
            assert 0 < expected.num_rows < end
            assert_same(history(lake, metastore, spec, p, 0, end, 128), expected)
            from_lake = [ev for t in read_history(lake, metastore, spec, p, 0, end, max_rows=128)
                         for ev in events_from_history(spec, p, t, "https://x/schema")]
            from_kafka = kafka_events(kafka_bootstrap, spec, p)
            assert len(from_lake) == len(from_kafka) == expected.num_rows
            assert from_lake == from_kafka  # ids, sequences, attributes, data bytes, event times
        if stage == "landed":
            compact_all(spec, lake, metastore)
    metastore.dispose()
