"""Landing end to end against the real broker, without Dagster: produce, land, read back
with an independent reader (pyarrow.dataset over the hive layout), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from connectors.flows import RunContext, compact_hour, land, land_run
from connectors.flows.context import NoLakeError
from connectors.kafka import HistoryLostError
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec, parse_spec_file
from examples.demo_data import generate_clicks, produce
from orchestration.services.broker import running_broker
from tests.support import START_SIGNAL, start_together

REPO = Path(__file__).resolve().parents[3]


def clicks_spec(topic: str, **trigger) -> DataProductSpec:
    spec = parse_spec_file(REPO / "dataproducts" / "clicks.yaml")
    update = {"topic": topic}
    if trigger:
        update["trigger"] = spec.trigger.model_copy(update=trigger)
    return spec.model_copy(update=update)


@pytest.fixture(params=["sqlite", "postgresql"])
def metastore_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    return sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def produce_clicks(bootstrap: str, topic: str, n: int, invalid_rate: float = 0.05, seed: int = 7):
    records = list(generate_clicks(n, 3, invalid_rate, seed=seed))
    report = produce(bootstrap, topic, records, partitions=2)
    assert report.produced == n
    return records, report


def read_back(lake_root: Path, product: str) -> tuple[list[dict], list[dict]]:
    """The lake as any batch job sees it: hive partitions under <lake>/<product>/."""
    landed = ds.dataset(lake_root / product, format="parquet", partitioning="hive").to_table()
    qdir = lake_root / "_quarantine" / product
    quarantined = (
        ds.dataset(qdir, format="parquet", partitioning="hive").to_table().to_pylist() if qdir.exists() else []
    )
    return landed.to_pylist(), quarantined


def test_land_every_record_once_and_invalid_to_quarantine(kafka_bootstrap, topic, tmp_path, metastore_url):
    records, report = produce_clicks(kafka_bootstrap, topic, 3000)
    spec = clicks_spec(topic)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(metastore_url)

    result = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, run_id="run-1")

    assert result.consumed == 3000
    assert result.consumed == result.landed + result.quarantined
    assert result.quarantined == report.invalid > 0
    landed, quarantined = read_back(tmp_path / "lake", spec.name)
    valid_ids = sorted(k.decode() for k, _, ok in records if ok)
    assert sorted(r["event_id"] for r in landed) == valid_ids  # each valid record exactly once
    # Every offset of the topic is accounted for exactly once, landed or quarantined.
    positions = sorted((r["_partition"], r["_offset"]) for r in [*landed, *quarantined])
    expected = sorted((p, o) for p, n in report.per_partition.items() for o in range(n))
    assert positions == expected
    invalid = {k.decode(): v for k, v, ok in records if not ok}
    assert len(quarantined) == len(invalid)
    for row in quarantined:
        assert row["_error"], row
        assert row["_raw"] == invalid[row["_key"]]  # the original bytes, untouched
    # The metastore's live-file list is the same set of files the reader found.
    live = {f.path for f in metastore.live_files(spec.name)}
    assert live == set(result.files)
    committed = metastore.committed_offsets(spec.name)
    assert {p: s.next_offset for p, s in committed.items()} == report.per_partition
    assert all(s.at_eof for s in committed.values())

    again = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, run_id="run-2")
    assert again.consumed == 0 and again.files == []
    metastore.dispose()


def test_cap_leaves_the_rest_for_the_next_run(kafka_bootstrap, topic, tmp_path, sqlite_url):
    records, report = produce_clicks(kafka_bootstrap, topic, 2000, invalid_rate=0.0)
    spec = clicks_spec(topic)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(sqlite_url)

    first = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, max_records=600)
    assert first.consumed == 600  # 300 per partition
    assert not any(p.reached_eof for p in first.partitions.values())
    assert not any(s.at_eof for s in metastore.committed_offsets(spec.name).values())

    rest = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap)
    assert rest.consumed == 1400
    assert all(p.reached_eof for p in rest.partitions.values())
    landed, _ = read_back(tmp_path / "lake", spec.name)
    assert sorted(r["event_id"] for r in landed) == sorted(k.decode() for k, _, _ in records)


LAND_SCRIPT = """
import json, sys
from connectors.lake import Lake
from connectors.flows import RunContext, compact_hour, land, land_run
from connectors.flows.context import NoLakeError
from connectors.metastore import Metastore
from connectors.spec import parse_spec_file
spec = parse_spec_file(__import__("pathlib").Path("dataproducts/clicks.yaml")).model_copy(update={"topic": sys.argv[1]})
lake, metastore = Lake(sys.argv[3]), Metastore(sys.argv[4])
""" + START_SIGNAL + """  # both start at the same instant
r = land(spec, lake=lake, metastore=metastore, bootstrap=sys.argv[2], run_id=sys.argv[5])
print(json.dumps({"consumed": r.consumed, "skipped": {str(p): s for p, s in r.skipped.items()},
                  "landed_partitions": [p for p, pl in r.partitions.items() if pl.consumed]}))
"""


def test_double_trigger_in_two_processes_lands_once(kafka_bootstrap, topic, tmp_path, sqlite_url):
    records, report = produce_clicks(kafka_bootstrap, topic, 20_000, invalid_rate=0.01)
    lake_root = tmp_path / "lake"
    Metastore(sqlite_url).dispose()  # schema created once, before the race
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LAND_SCRIPT, topic, kafka_bootstrap, str(lake_root), sqlite_url, f"run-{i}"],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in (1, 2)
    ]
    start_together(procs)
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))

    # Either one run held the claims and the other said so, or each landed other partitions,
    # or one finished before the other started (then the second found nothing new).
    assert sum(o["consumed"] for o in outs) == 20_000
    for p in (0, 1):
        assert sum(p in o["landed_partitions"] for o in outs) == 1
    landed, quarantined = read_back(lake_root, "clicks")
    ids = [r["event_id"] for r in landed]
    assert len(ids) == len(set(ids)) == report.valid
    assert len(landed) + len(quarantined) == 20_000


def test_history_lost_stops_with_a_clear_message(kafka_bootstrap, topic, tmp_path, sqlite_url):
    produce_clicks(kafka_bootstrap, topic, 400, invalid_rate=0.0)
    spec = clicks_spec(topic)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(sqlite_url)
    land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap)

    # A memory broker restarted: the same topic name, far fewer records, same metastore.
    with running_broker() as fresh:
        produce_clicks(fresh.bootstrap, topic, 10, invalid_rate=0.0)
        with pytest.raises(HistoryLostError) as lost:
            land(spec, lake=lake, metastore=metastore, bootstrap=fresh.bootstrap)
    message = str(lost.value)
    assert "lost its history" in message
    # The engine names the decision, not a command: the CLI adds its flags (tests/orchestration/test_cli_errors.py).
    assert "reset the committed offset of partition" in message and "partition's end" in message
    assert "--" not in message and lost.value.reset_to == "end"
    assert len(metastore.live_files(spec.name)) > 0  # nothing committed, nothing deleted


def test_land_keywords_are_the_run_contexts_and_the_landing_options(tmp_path):
    """`land`'s keywords are split between RunContext and LandingOptions: every one belongs to
    exactly one of them, so none is dropped, and an unknown one is refused as before."""
    from dataclasses import fields

    from connectors.flows.landing import _RUN_KEYWORDS, LandingOptions, LandKeywords

    options = {f.name for f in fields(LandingOptions)}
    run = {f.name for f in fields(RunContext)}
    assert set(_RUN_KEYWORDS) <= run and not set(_RUN_KEYWORDS) & options
    assert set(LandKeywords.__annotations__) == set(_RUN_KEYWORDS) | options
    with pytest.raises(TypeError, match="idle_timeout"):
        land(clicks_spec("clicks"), lake=Lake(str(tmp_path / "lake")), metastore=None, bootstrap="",
             idle_timeout=1)


def test_a_run_context_without_a_lake_is_refused_by_the_steps_that_write_one(kafka_bootstrap, topic, sqlite_url):
    """publish and capture are given `lake=None`; landing and compaction, handed such a context,
    say which step needed the lake before they claim or read anything."""
    produce_clicks(kafka_bootstrap, topic, 20, invalid_rate=0.0)
    spec = clicks_spec(topic)
    metastore = Metastore(sqlite_url)
    try:
        run = RunContext(lake=None, metastore=metastore, bootstrap=kafka_bootstrap)
        with pytest.raises(NoLakeError, match=f"landing {spec.name} writes the lake"):
            land_run(spec, run)
        with pytest.raises(NoLakeError, match=f"compacting {spec.name} 2026-01-10-10 writes the lake"):
            compact_hour(spec, "2026-01-10-10", run)
        assert metastore.committed_offsets(spec.name) == {}
        assert metastore.hours(spec.name) == []
    finally:
        metastore.dispose()


def test_past_the_memory_budget_files_are_finished_early_and_nothing_is_lost(
    kafka_bootstrap, topic, tmp_path, sqlite_url, monkeypatch
):
    """A run's open files buffer rows until a full row group; past MAX_BUFFERED_BYTES the files
    with the largest buffers are finished early and that hour continues in a new file named by
    its first offset, so memory does not grow with the hours a backlog spans."""
    from connectors.flows import landing

    records, report = produce_clicks(kafka_bootstrap, topic, 6000, invalid_rate=0.0)
    spec = clicks_spec(topic)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(sqlite_url)
    monkeypatch.setattr(landing, "MAX_BUFFERED_BYTES", 64 * 1024)

    result = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, run_id="run-1", batch_size=100)

    per_hour_partition: dict[tuple[str, str], list[str]] = {}
    for path in result.files:
        folder, name = path.rsplit("/", 1)
        per_hour_partition.setdefault((folder, name.split("+")[1]), []).append(name)
    assert max(len(names) for names in per_hour_partition.values()) > 1  # finished early, continued
    assert len(set(result.files)) == len(result.files)
    # Every record exactly once, and the metastore's live files are exactly the run's files.
    landed, _ = read_back(tmp_path / "lake", spec.name)
    assert sorted(r["event_id"] for r in landed) == sorted(k.decode() for k, _, _ in records)
    assert {f.path for f in metastore.live_files(spec.name)} == set(result.files)
    positions = sorted((r["_partition"], r["_offset"]) for r in landed)
    assert positions == sorted((p, o) for p, n in report.per_partition.items() for o in range(n))
    # A later file of an hour is named by the first offset it holds.
    for path in result.files:
        name = path.rsplit("/", 1)[1]
        partition, first = int(name.split("+")[1]), int(name.split("+")[2].split(".")[0])
        held = [r["_offset"] for r in ds.dataset(tmp_path / "lake" / path, format="parquet").to_table().to_pylist()]
        assert first == 0 or first == min(held), (path, first, min(held))
        assert all(r["_partition"] == partition for r in ds.dataset(tmp_path / "lake" / path).to_table().to_pylist())


def test_a_run_failing_after_files_were_finished_early_leaves_nothing_and_the_retry_lands_all_once(
    kafka_bootstrap, topic, tmp_path, sqlite_url, monkeypatch
):
    from connectors.flows import landing

    records, _ = produce_clicks(kafka_bootstrap, topic, 6000, invalid_rate=0.0)
    spec = clicks_spec(topic)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(sqlite_url)
    monkeypatch.setattr(landing, "MAX_BUFFERED_BYTES", 64 * 1024)
    finished_before_failure = []
    real_close_all = landing.HourFiles.close_all

    def fail_at_the_end(self):
        finished_before_failure.append(len(self.finished))
        raise OSError("disk full")

    monkeypatch.setattr(landing.HourFiles, "close_all", fail_at_the_end)
    with pytest.raises(OSError, match="disk full"):
        land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, run_id="run-1", batch_size=100)
    assert finished_before_failure[0] > 0  # published files existed when the run failed
    assert not list((tmp_path / "lake").rglob("*.parquet"))  # the failed run left none behind
    assert metastore.live_files(spec.name) == []

    monkeypatch.setattr(landing.HourFiles, "close_all", real_close_all)
    land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, run_id="run-2", batch_size=100)
    landed, _ = read_back(tmp_path / "lake", spec.name)
    assert sorted(r["event_id"] for r in landed) == sorted(k.decode() for k, _, _ in records)
