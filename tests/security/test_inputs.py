"""Identifiers and path values from specs and from record fields are validated or made inert.

- SQL: spec validation rejects table, field and product names that are not plain identifiers
  (so no statement can be smuggled through them), and the warehouse quotes the identifiers it
  does accept — reserved words work as table and column names on every dialect — while record
  values with SQL in them land as data.
- paths: lake paths come from computed event-time hours and validated names; a record's
  fields (event time, key) can never steer a file out of its hour folder, and `safe_segment`
  rejects separators, '..' and hidden names.
- quarantine: payloads that would run if evaluated (Python, YAML tags, pickle) are stored as
  the original bytes in `_raw`, byte-identical, and nothing executes.
"""

from __future__ import annotations

import json
import pickle
import re
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from connectors.flows import land
from connectors.formats import lake_schema
from connectors.lake import (
    Lake,
    LakePathError,
    hour_dir,
    landed_file_name,
    parse_hour_key,
    safe_segment,
)
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec
from connectors.warehouse import WarehouseSink
from examples.demo_data import produce
from tests.support import read_hive

ROOT = Path(__file__).resolve().parents[2]


def _spec(**over) -> dict:
    base = {
        "name": "accounts",
        "owner": "team:x",
        "topic": "accounts",
        "key": ["id"],
        "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "int64"}],
        "partitioning": {"start": "2026-11-01T00:00:00Z"},
        "event_time": {"source": "kafka_timestamp"},
        "sinks": {"database": {"table": "accounts"}},
    }
    base.update(over)
    return base


INJECTIONS = [
    "x; DROP TABLE users; --",
    'x" OR "1"="1',
    "x`; DELETE FROM t",
    "x'--",
    "X",
    "1x",
    "a b",
    "a-b",
    "a.b",
    "_private",
    "x\n",
    "x\x00",
    "é",
    "a" * 64,
]


@pytest.mark.parametrize("bad", INJECTIONS)
def test_spec_rejects_non_identifier_table_field_and_product_names(bad):
    DataProductSpec.model_validate(_spec())  # the base is valid: each rejection below is the name's
    with pytest.raises(ValidationError):
        DataProductSpec.model_validate(_spec(sinks={"database": {"table": bad}}))
    with pytest.raises(ValidationError):
        DataProductSpec.model_validate(
            _spec(fields=[{"name": "id", "type": "string"}, {"name": bad, "type": "int64"}])
        )
    with pytest.raises(ValidationError):
        DataProductSpec.model_validate(_spec(name=bad))


@pytest.mark.parametrize("bad", ["../x", "a/b", "x;y", "x y", "", ".", "..", "a\n"])
def test_spec_rejects_unsafe_topic_names(bad):
    DataProductSpec.model_validate(_spec())
    with pytest.raises(ValidationError):
        DataProductSpec.model_validate(_spec(topic=bad))


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def warehouse_url(request):
    return request.getfixturevalue(
        {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}[request.param]
    )


def test_warehouse_quotes_identifiers_and_stores_sql_as_data(warehouse_url):
    # Reserved words as table and column names: unquoted, every statement would be a syntax error.
    spec = DataProductSpec.model_validate(
        _spec(
            name="orders",
            key=["select"],
            fields=[
                {"name": "select", "type": "string"},
                {"name": "order", "type": "string"},
                {"name": "group", "type": "int64"},
            ],
            sinks={"database": {"table": "order"}},
        )
    )
    schema = lake_schema(spec)
    evil = ['\'); DROP TABLE "order"; --', "1' OR '1'='1", "`; DELETE FROM `order`; #", "\\'; --"]
    rows = [
        {
            "select": f"k{i}",
            "order": v,
            "group": i,
            "_topic": "accounts",
            "_partition": 0,
            "_offset": i,
            "_timestamp": 0,
            "_key": f"k{i}".encode(),
        }
        for i, v in enumerate(evil)
    ]
    table = pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)
    sink = WarehouseSink(spec, warehouse_url)
    try:
        sink.ensure_table()
        sink.apply(table, {0: len(evil)})
        sink.apply(table, {0: len(evil)})  # idempotent, and the table is still there
        got = {r["select"]: r["order"] for r in sink.read_rows()}
        assert got == {f"k{i}": v for i, v in enumerate(evil)}
        assert sink.row_count() == len(evil)
    finally:
        sink.dispose()


@pytest.mark.parametrize(
    "bad", ["..", "../etc", "a/b", "a\\b", ".hidden", "_SUCCESS", "", "x\n", "a/../b", "/abs"]
)
def test_safe_segment_rejects_traversal(bad):
    with pytest.raises(LakePathError):
        safe_segment(bad)


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "2026-11-26-10/../../x", "2026-11-26-99", "dt=x/hour=1"]
)
def test_hour_keys_are_parsed_never_pasted(bad):
    with pytest.raises((ValueError, LakePathError)):
        hour_dir("clicks", parse_hour_key(bad))
    with pytest.raises((ValueError, LakePathError)):
        hour_dir("clicks", bad)


def test_record_fields_cannot_steer_lake_paths(topic, kafka_bootstrap, tmp_path):
    """Event times and keys that look like paths: each record lands under its computed hour
    (or in the quarantine), and every file the run wrote is inside the product's folders."""
    from connectors.spec import parse_spec_file

    spec = parse_spec_file(ROOT / "dataproducts" / "clicks.yaml").model_copy(
        update={"topic": topic}
    )
    good = {"user_id": "u", "partner_id": "p-001", "ad_id": "a", "kind": "click", "cost_micros": 1}
    nasty = [
        "../../../../tmp/evil",
        "/etc/passwd",
        "2026-11-26T10:00:00Z/../../x",
        "..",
        "dt=1970-01-01/hour=00",
        "2026-11-26T10:00:00Z",
    ]
    records = []
    for i, t in enumerate(nasty):
        value = json.dumps({**good, "event_id": f"../../e{i}", "event_time": t}).encode()
        records.append((f"../../k{i}/..".encode(), value, True))
    produce(kafka_bootstrap, topic, records, partitions=2)
    root = tmp_path / "lake"
    result = land(
        spec,
        lake=Lake(str(root)),
        metastore=Metastore(f"sqlite:///{tmp_path / 'm.db'}"),
        bootstrap=kafka_bootstrap,
        idle_timeout_s=5,
    )
    assert result.consumed == len(nasty) == result.landed + result.quarantined
    assert result.landed == 1  # only the well-formed time
    layout = re.compile(r"^(_quarantine/)?clicks/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/[^/]+\.parquet$")
    files = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    assert files and all(layout.match(f) for f in files), files
    assert not any(p.name.startswith(("e", "k")) for p in tmp_path.parent.glob("*")), (
        "a file escaped"
    )
    assert read_hive(root / "clicks").column("event_id").to_pylist() == [
        "../../e5"
    ]  # stored as data
    assert landed_file_name(topic, 0, 0) == f"{topic}+0+0.parquet"


def test_quarantined_payloads_are_bytes_never_evaluated(topic, kafka_bootstrap, tmp_path):
    marker = tmp_path / f"pwned-{uuid.uuid4().hex[:6]}"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    payloads = [
        f"__import__('os').system('touch {marker}')".encode(),
        f"!!python/object/apply:os.system ['touch {marker}']".encode(),
        pickle.dumps(Evil()),
        b"{{ ''.__class__.__mro__[1].__subclasses__() }}",
        json.dumps(
            {"event_id": f"__import__('os').system('touch {marker}')"}
        ).encode(),  # JSON, fails validation
        b"\x80\x04\x95\xff\xfe\x00",
    ]
    produce(
        kafka_bootstrap,
        topic,
        [(f"k{i}".encode(), p, False) for i, p in enumerate(payloads)],
        partitions=2,
    )
    from connectors.spec import parse_spec_file

    spec = parse_spec_file(ROOT / "dataproducts" / "clicks.yaml").model_copy(
        update={"topic": topic}
    )
    result = land(
        spec,
        lake=Lake(str(tmp_path / "lake")),
        metastore=Metastore(f"sqlite:///{tmp_path / 'm.db'}"),
        bootstrap=kafka_bootstrap,
        idle_timeout_s=5,
    )
    assert result.quarantined == len(payloads) and result.landed == 0
    q = read_hive(tmp_path / "lake" / "_quarantine" / "clicks")
    assert q.schema.field("_raw").type in (pa.binary(), pa.large_binary())
    stored = {
        k: raw
        for k, raw in zip(q.column("_key").to_pylist(), q.column("_raw").to_pylist(), strict=True)
    }
    assert stored == {f"k{i}": p for i, p in enumerate(payloads)}, "a payload was altered"
    assert not marker.exists(), "a quarantined payload was executed"
