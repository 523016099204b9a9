"""Exactly once in the lake under crashes: landing processes SIGKILLed at random points.

Each trial starts a real landing process and kills it with SIGKILL, either at a named point
of the engine (after a batch, after registering a file, before or after the commit) or at a
random moment. When all kills are done, landings run to completion. Then an independent
reader checks DESIGN invariant 1 and 3: every valid record of the topic is in exactly one
visible Parquet file, every invalid one in the quarantine exactly once, nothing pending is
left, and the lake holds no file the metastore does not list as live.

`make test` runs 10 kills on SQLite, 4 on PostgreSQL and 3 on S3; `make reliability` (FLOWSUITE_RELIABILITY=full) runs 50 each.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from connectors.flows import land
from connectors.metastore import Metastore
from connectors.spec import parse_spec_file
from examples.demo_data import generate_clicks, produce
from tests.support import positions, read_topic, wait_for_dead_claims
from tests.support.reliability_table import iterations
from tests.support.s3 import env_lake, list_lake_files, read_lake

ROOT = Path(__file__).resolve().parents[3]
WORKER = ROOT / "tests" / "workers" / "land_worker.py"
# Named points of connectors/flows/landing.py, and None: a SIGKILL at a random moment.
CRASH_POINTS = ["after_batch", "after_register", "before_commit", "after_commit", None, None]
LEASE_S = 1.5


def _spec(topic: str):
    return parse_spec_file(ROOT / "dataproducts" / "clicks.yaml").model_copy(update={"topic": topic})


def _run_worker(spec, lake_url: str, metastore_url: str, bootstrap: str, crash_at: str | None,
                kill_after: float | None, max_records: int, max_buffered_bytes: int | None = None) -> tuple[int, int | None]:
    env = dict(os.environ)
    env.pop("FLOWSUITE_CRASH_AT", None)
    if crash_at:
        env["FLOWSUITE_CRASH_AT"] = crash_at
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), spec.model_dump_json(), lake_url, metastore_url, bootstrap,
         "--max-records", str(max_records), "--lease", str(LEASE_S), "--batch-size", "300",
         *(["--max-buffered-bytes", str(max_buffered_bytes)] if max_buffered_bytes else [])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"worker failed ({proc.returncode}): {err.decode()[-2000:]}")
    consumed = json.loads(out.decode().strip().splitlines()[-1])["consumed"] if proc.returncode == 0 else None
    return proc.returncode, consumed


@pytest.mark.parametrize("store", ["sqlite", "postgresql", "s3"])  # s3: SQLite metastore, lake on moto
def test_sigkill_at_random_points_loses_and_duplicates_nothing(store, make_topic, kafka_bootstrap, tmp_path, request):
    metastore_url = f"sqlite:///{tmp_path / 'metastore.db'}" if store != "postgresql" else request.getfixturevalue("pg_fresh_url")
    kills_wanted = iterations({"sqlite": 10, "postgresql": 4, "s3": 3}[store])  # 50 each at full strength
    rng = random.Random(20261126 + len(store))
    topic = make_topic(partitions=2)
    valid_by_key: dict[bytes, bool] = {}

    def produce_more(n: int) -> None:
        generated = list(generate_clicks(n, hours=4, invalid_rate=0.03, seed=rng.randrange(10**9)))
        produce(kafka_bootstrap, topic, iter(generated), partitions=2)
        valid_by_key.update((key, ok) for key, _, ok in generated)

    produce_more(4000)
    spec = _spec(topic)
    lake_url = request.getfixturevalue("s3_lake_url") if store == "s3" else str(tmp_path / "lake")
    metastore = Metastore(metastore_url)

    kills = 0
    attempts = 0
    while kills < kills_wanted:
        attempts += 1
        assert attempts < kills_wanted * 4, "landing finished too often before it could be killed"
        point = rng.choice(CRASH_POINTS)
        crash_at = f"{point}:{rng.randint(1, 2)}" if point else None
        kill_after = None if point else rng.uniform(0.5, 2.0)
        # Half the trials with a tiny memory bound: files are finished early and their hours
        # continue in files named by their first offset, so kills also find those pending.
        code, consumed = _run_worker(spec, lake_url, metastore_url, kafka_bootstrap, crash_at, kill_after,
                                     max_records=rng.choice([300, 600, 1200]),
                                     max_buffered_bytes=rng.choice([None, 16 * 1024]))
        if code == -signal.SIGKILL:
            kills += 1
            wait_for_dead_claims(metastore, spec.name, LEASE_S * 3)  # the killed run's leases run out
        elif consumed == 0:
            produce_more(2000)  # drained: give the next trials something to crash in

    # Run to completion: landings until nothing is left.
    for _ in range(20):
        result = land(spec, lake=env_lake(lake_url), metastore=metastore, bootstrap=kafka_bootstrap, lease_s=LEASE_S)
        if result.consumed == 0 and not result.skipped:
            break
        if result.skipped:
            wait_for_dead_claims(metastore, spec.name, LEASE_S * 3)
    else:
        pytest.fail("landing did not drain the topic")

    topic_records = read_topic(kafka_bootstrap, topic, 2)
    expected_valid = Counter(pos for pos, (key, _) in topic_records.items() if valid_by_key[key])
    expected_invalid = Counter(pos for pos, (key, _) in topic_records.items() if not valid_by_key[key])
    landed = read_lake(lake_url, "clicks")
    quarantined = read_lake(lake_url, "_quarantine/clicks")
    assert positions(landed) == expected_valid, "a valid record was lost or duplicated"
    assert positions(quarantined) == expected_invalid, "an invalid record was lost or duplicated"
    raw_by_pos = {(p, o): raw for p, o, raw in zip(quarantined.column("_partition").to_pylist(),
                                                    quarantined.column("_offset").to_pylist(),
                                                    quarantined.column("_raw").to_pylist(), strict=True)}
    assert all(raw_by_pos[pos] == (topic_records[pos][1] or None) or topic_records[pos][1] == b""
               for pos in expected_invalid), "a quarantined record lost its original bytes"

    # Nothing pending, and the lake holds exactly the live files (no orphan of a killed run).
    assert metastore.files_in_states("clicks", ["pending"]) == []
    live = {f.path for f in metastore.live_files("clicks", kinds=("landed", "quarantine"))}
    on_disk = list_lake_files(lake_url)  # hidden temp files and S3 objects included
    assert on_disk == live, f"files not live in the metastore: {sorted(on_disk - live)[:5]}"
    assert metastore.claims_of("clicks") == []
    offsets = metastore.committed_offsets("clicks")
    ends = {p: max(o for q, o in topic_records if q == p) + 1 for p in (0, 1)}
    assert {p: s.next_offset for p, s in offsets.items()} == ends
    print(json.dumps({"store": store, "kills": kills, "attempts": attempts, "records": len(topic_records)}))
    from tests.support.reliability_table import record  # the reliability table

    record(f"landing: SIGKILL ({store})", kills, len(topic_records), 0, 0, kills, f"{attempts} attempts")
