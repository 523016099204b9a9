"""The lake on S3 (moto's server over real HTTP): landing, quarantine, compaction, `_SUCCESS`
markers, `flowsuite read`, replay, late data — and S3 faults (503s, dropped connections,
an outage) injected by a real TCP proxy in front of the server.

Every check reads the bucket independently (its own pyarrow S3 filesystem over the hive
layout, never `connectors.lake`) and compares with the topic read by a plain consumer.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import pytest
import yaml

from connectors.flows import compact_closed_hours, land, read_marker, replay_hour
from connectors.lake import SUCCESS, Lake, S3Options, hour_dir, live_files_between, read_rows
from connectors.metastore import Metastore
from connectors.settings import REPO_ROOT
from examples.demo_data import generate_clicks, produce
from orchestration.cli import main
from tests.support import positions, read_topic
from tests.support.compaction import (
    HOURS,
    LATER,
    NOW,
    assert_exactly_once,
    clicks_spec,
    compaction_child,
    land_in_rounds,
)
from tests.support.runs import run_at
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, env_lake, list_lake_files, read_lake
from tests.support.s3_faults import FaultyS3Proxy

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log


def _produce(bootstrap: str, topic: str, n: int, seed: int, valid: dict[bytes, bool]) -> None:
    generated = list(generate_clicks(n, 3, 0.05, seed=seed, now=NOW))
    assert produce(bootstrap, topic, iter(generated), partitions=2).produced == n
    valid.update((key, ok) for key, _, ok in generated)


def _assert_lake_is_the_topic(lake_url: str, metastore: Metastore, bootstrap: str, topic: str,
                              valid: dict[bytes, bool], endpoint: str | None = None) -> None:
    """Invariants 1 and 3 checked from outside: every record of the topic exactly once,
    landed or quarantined; nothing pending; the bucket holds exactly the live files."""
    records = read_topic(bootstrap, topic, 2)
    landed = read_lake(lake_url, "clicks", endpoint)
    quarantined = read_lake(lake_url, "_quarantine/clicks", endpoint)
    assert positions(landed) == Counter(pos for pos, (k, _) in records.items() if valid[k])
    assert positions(quarantined) == Counter(pos for pos, (k, _) in records.items() if not valid[k])
    assert metastore.files_in_states("clicks", ["pending"]) == []
    live = {f.path for f in metastore.live_files("clicks", kinds=("landed", "compacted", "quarantine"))}
    objects = {p for p in list_lake_files(lake_url, "", endpoint) if not p.endswith(SUCCESS)}
    assert objects == live, f"objects not live: {sorted(objects - live)[:3]}; live missing: {sorted(live - objects)[:3]}"


def test_landing_on_s3_lands_every_record_once(kafka_bootstrap, topic, s3_lake_url, sqlite_url):
    spec = clicks_spec(topic)
    lake, metastore = env_lake(s3_lake_url), Metastore(sqlite_url)
    assert lake.is_s3 and lake.uri("clicks/x.parquet").startswith("s3://flowsuite-test/lake-")
    valid: dict[bytes, bool] = {}
    _produce(kafka_bootstrap, topic, 2000, 1, valid)
    first = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, run_id="s3-1", idle_timeout_s=10)
    assert first.consumed == 2000 and first.quarantined > 0
    _produce(kafka_bootstrap, topic, 700, 2, valid)
    second = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, run_id="s3-2", idle_timeout_s=10)
    assert second.consumed == 700
    _assert_lake_is_the_topic(s3_lake_url, metastore, kafka_bootstrap, topic, valid)
    # The offsets are committed where the next run starts.
    assert sum(s.next_offset for s in metastore.committed_offsets("clicks").values()) == 2700


def test_compaction_markers_read_replay_and_late_data_on_s3(
    kafka_bootstrap, topic, s3_lake_url, sqlite_url, tmp_path, monkeypatch, capsys
):
    spec = clicks_spec(topic)
    lake, metastore = env_lake(s3_lake_url), Metastore(sqlite_url)
    land_in_rounds(spec, kafka_bootstrap, lake, metastore, rounds=2, per_round=500)
    before = positions(read_lake(s3_lake_url, "clicks"))
    landed_objects = {p for p in list_lake_files(s3_lake_url, "clicks")}
    assert len(landed_objects) >= 2 * len(HOURS)

    results, skipped = compact_closed_hours(spec, run_at(lake=lake, metastore=metastore, now=LATER))
    assert not skipped and sorted(r.hour for r in results) == HOURS
    objects = list_lake_files(s3_lake_url, "clicks")
    for h in HOURS:  # per hour: the compacted file and the marker, no landed file left
        names = sorted(p.rsplit("/", 1)[-1] for p in objects if p.startswith(hour_dir("clicks", h) + "/"))
        assert names == [SUCCESS, "part-g1-0.parquet"], (h, names)
        assert read_marker(lake, "clicks", h)["generation"] == 1
    assert positions(read_lake(s3_lake_url, "clicks")) == before  # no row lost or doubled

    # Readers: the metastore's live files, read with pyarrow (DuckDB would need httpfs).
    files = live_files_between(metastore, "clicks", HOURS[0], HOURS[-1])
    assert read_rows(lake, files).num_rows == sum(before.values())
    products = tmp_path / "products"
    products.mkdir()
    data = yaml.safe_load((REPO_ROOT / "dataproducts" / "clicks.yaml").read_text())
    data["topic"] = topic
    (products / "clicks.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("FLOWSUITE_PRODUCTS_DIR", str(products))
    monkeypatch.setenv("FLOWSUITE_LAKE_URL", s3_lake_url)
    monkeypatch.setenv("FLOWSUITE_METASTORE_URL", sqlite_url)
    capsys.readouterr()
    assert main(["read", "clicks", "--hour", HOURS[1], "--rows", "3"]) == 0
    out = capsys.readouterr().out
    assert f"{s3_lake_url}/{hour_dir('clicks', HOURS[1])}/part-g1-0.parquet" in out
    assert "1 live file(s)" in out and "event_id" in out

    # Replay rebuilds an hour from Kafka into generation 2; the generation-1 object goes.
    r = replay_hour(spec, HOURS[1], run_at(lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, now=LATER))
    assert r.status == "compacted" and r.source == "kafka" and r.generation == 2, r.note
    h1 = sorted(p.rsplit("/", 1)[-1] for p in list_lake_files(s3_lake_url, hour_dir("clicks", HOURS[1])))
    assert h1 == [SUCCESS, "part-g2-0.parquet"]
    assert positions(read_lake(s3_lake_url, "clicks")) == before

    # A late record reopens its hour: the marker object goes until it is compacted again.
    late = (b"late-1", b'{"event_id":"late-1","user_id":"u-1","partner_id":"p-001","ad_id":"ad-1",'
            b'"kind":"click","cost_micros":5,"event_time":"2026-01-10T10:59:59.000Z"}', True)
    produce(kafka_bootstrap, topic, [late])
    res = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=10)
    assert res.reopened_hours == [HOURS[0]]
    assert f"{hour_dir('clicks', HOURS[0])}/{SUCCESS}" not in list_lake_files(s3_lake_url, "clicks")
    compact_closed_hours(spec, run_at(lake=lake, metastore=metastore, now=LATER))
    assert read_marker(lake, "clicks", HOURS[0])["generation"] == 2
    assert read_lake(s3_lake_url, "clicks").column("event_id").to_pylist().count("late-1") == 1


@pytest.mark.parametrize("crash_at", ["compact_before_swap", "compact_during_delete"])
def test_compaction_crash_then_rerun_is_exactly_once_on_s3(kafka_bootstrap, topic, s3_lake_url, tmp_path, crash_at):
    import signal

    spec = clicks_spec(topic)
    lake, metastore = env_lake(s3_lake_url), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    land_in_rounds(spec, kafka_bootstrap, lake, metastore, rounds=2, per_round=400)
    expected = sorted(positions(read_lake(s3_lake_url, "clicks")).elements())
    proc = compaction_child(spec, lake, str(metastore.engine.url), HOURS, crash_at)  # S3 env is inherited
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    metastore.clock = lambda: time.time() + 1.2  # the dead child's lease (1 s) has run out, without waiting
    _, skipped = compact_closed_hours(spec, run_at(lake=lake, metastore=metastore, now=LATER))
    assert not skipped, skipped
    assert_exactly_once(spec, lake, metastore, expected)
    assert positions(read_lake(s3_lake_url, "clicks")) == Counter(expected)  # the bucket, read from outside


# --- faults ---------------------------------------------------------------------------------


def _lake_through(proxy: FaultyS3Proxy, lake_url: str) -> Lake:
    return Lake(lake_url, S3Options(endpoint_url=proxy.endpoint, region=REGION, access_key_id=ACCESS_KEY,
                                    secret_access_key=SECRET_KEY))


def test_s3_503_and_dropped_connections_during_puts_are_retried(
    kafka_bootstrap, topic, s3_server, s3_lake_url, sqlite_url
):
    spec = clicks_spec(topic)
    metastore = Metastore(sqlite_url)
    valid: dict[bytes, bool] = {}
    _produce(kafka_bootstrap, topic, 1500, 3, valid)
    with FaultyS3Proxy(s3_server.endpoint, faults={1: "503", 3: "drop", 4: "503", 7: "drop"}) as proxy:
        result = land(spec, lake=_lake_through(proxy, s3_lake_url), metastore=metastore,
                      bootstrap=kafka_bootstrap, run_id="faulty", idle_timeout_s=10)
    assert [f for _, f, _ in proxy.injected] == ["503", "drop", "503", "drop"], proxy.injected
    assert result.consumed == 1500 == result.landed + result.quarantined
    _assert_lake_is_the_topic(s3_lake_url, metastore, kafka_bootstrap, topic, valid)


def test_s3_outage_fails_the_run_cleanly_then_a_healthy_run_lands_once(
    kafka_bootstrap, topic, s3_server, s3_lake_url, sqlite_url
):
    spec = clicks_spec(topic)
    metastore = Metastore(sqlite_url)
    valid: dict[bytes, bool] = {}
    _produce(kafka_bootstrap, topic, 1500, 4, valid)
    # Two files get through, then every put fails with 503 until retries run out.
    with FaultyS3Proxy(s3_server.endpoint, fail_from=(3, "503")) as proxy:
        with pytest.raises(OSError, match="SLOW_DOWN|Slow|503"):
            land(spec, lake=_lake_through(proxy, s3_lake_url), metastore=metastore,
                 bootstrap=kafka_bootstrap, run_id="outage", idle_timeout_s=10)
    assert len(proxy.injected) >= 5  # the failing put was retried before giving up
    # Failed cleanly: nothing committed, nothing pending, no claim held, no object left.
    assert metastore.committed_offsets("clicks") == {}
    assert metastore.files_in_states("clicks", ["pending", "committed"]) == []
    assert metastore.claims_of("clicks") == []
    assert list_lake_files(s3_lake_url) == set()

    result = land(spec, lake=env_lake(s3_lake_url), metastore=metastore, bootstrap=kafka_bootstrap,
                  run_id="healthy", idle_timeout_s=10)
    assert result.consumed == 1500
    _assert_lake_is_the_topic(s3_lake_url, metastore, kafka_bootstrap, topic, valid)


def test_s3_outage_that_also_fails_deletes_leaves_nothing_untracked(
    kafka_bootstrap, topic, s3_server, s3_lake_url, sqlite_url
):
    """The failed run cannot delete the files it uploaded: they stay listed as pending (never
    an object the metastore does not know), and the next claimant deletes them first."""
    spec = clicks_spec(topic)
    metastore = Metastore(sqlite_url)
    valid: dict[bytes, bool] = {}
    _produce(kafka_bootstrap, topic, 1200, 5, valid)
    # One upload gets through; then puts and deletes fail until retries run out (each ~13 s).
    with FaultyS3Proxy(s3_server.endpoint, fail_from=(2, "503"), methods=("PUT", "DELETE")) as proxy:
        with pytest.raises(OSError):
            land(spec, lake=_lake_through(proxy, s3_lake_url), metastore=metastore,
                 bootstrap=kafka_bootstrap, run_id="outage", idle_timeout_s=10)
    left = list_lake_files(s3_lake_url)
    assert len(left) == 1 and proxy.injected  # the upload that got through, undeletable
    assert {f.path for f in metastore.files_in_states("clicks", ["pending"], kinds=("landed", "quarantine"))} == left
    assert metastore.committed_offsets("clicks") == {}

    result = land(spec, lake=env_lake(s3_lake_url), metastore=metastore, bootstrap=kafka_bootstrap,
                  run_id="healthy", idle_timeout_s=10)
    assert result.consumed == 1200
    assert sorted(p for pl in result.partitions.values() for p in pl.deleted_pending) == sorted(left)
    _assert_lake_is_the_topic(s3_lake_url, metastore, kafka_bootstrap, topic, valid)
