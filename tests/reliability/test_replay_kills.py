"""SIGKILL at random points of a replay (connectors/flows/replay.py): the rebuilt hour is never lost
or doubled, and the next replay finishes the job.

Each iteration starts a real process that replays the three closed hours from the broker and
kills it — at a named point of the compaction core replay swaps through (after registering
its outputs, mid-write, before the swap, while deleting the replaced files, before the marker)
or at a random moment. Between kills an independent read of the live files must hold exactly
the recorded (partition, offset) pairs; at the end a replay runs to completion and the lake
holds no orphan.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

from connectors.flows import read_marker, replay_hour
from connectors.lake import Lake, hour_dir
from connectors.metastore import Metastore
from tests.support import wait_for_dead_claims
from tests.support.compaction import (
    HOURS,
    LATER,
    clicks_spec,
    hour_rows,
    land_in_rounds,
    pairs,
)
from tests.support.reliability import ROOT
from tests.support.reliability_table import SEED, iterations, record
from tests.support.runs import run_at

_CHILD = """
import sys
from datetime import datetime, UTC
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.flows import replay_hour
from tests.support.compaction import clicks_spec
from tests.support.runs import run_at
spec = clicks_spec(sys.argv[1])
for h in sys.argv[5:]:
    run = run_at(lake=Lake(sys.argv[2]), metastore=Metastore(sys.argv[3]), bootstrap=sys.argv[4],
                 run_id="replay-child", now=datetime(2026, 1, 11, tzinfo=UTC), lease_s=1.0)
    replay_hour(spec, h, run, idle_timeout_s=5)
"""
POINTS = [
    "compact_after_register",
    "compact_after_write",
    "compact_before_swap",
    "compact_after_swap",
    "compact_during_delete",
    "compact_before_marker",
    None,
    None,
    None,
]
LEASE_S = 1.0


def _child(spec, lake, meta_url, bootstrap, crash_at):
    env = {k: v for k, v in os.environ.items() if k != "FLOWSUITE_CRASH_AT"}
    env["PYTHONPATH"] = str(ROOT)
    if crash_at:
        env["FLOWSUITE_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, spec.topic, lake.root, meta_url, bootstrap, *HOURS],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_sigkill_at_random_points_of_replay(topic, kafka_bootstrap, tmp_path):
    rng = random.Random(SEED + 3)
    spec = clicks_spec(topic)
    lake = Lake(str(tmp_path / "lake"))
    metastore = Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    land_in_rounds(spec, kafka_bootstrap, lake, metastore, rounds=2, per_round=500)
    expected = Counter(pairs(hour_rows(lake, metastore, spec.name)))
    wanted = iterations(quick=2)
    kills = lost = dup = 0
    for _ in range(wanted * 3):
        point = rng.choice(POINTS)
        proc = _child(
            spec,
            lake,
            str(metastore.engine.url),
            kafka_bootstrap,
            f"{point}:{rng.randint(1, 3)}" if point else None,
        )
        if point is None:
            time.sleep(rng.uniform(1.0, 4.0))  # interpreter start ~1 s, then the replays
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read().decode()[-2000:]
        kills += proc.returncode == -signal.SIGKILL
        wait_for_dead_claims(metastore, spec.name, LEASE_S * 3)  # a killed replay's lease runs out
        seen = Counter(pairs(hour_rows(lake, metastore, spec.name)))
        lost += sum((expected - seen).values())
        dup += sum((seen - expected).values())
        assert seen == expected, "a replayed record is missing or live twice after a kill"
        if kills >= wanted:
            break
    assert kills >= wanted, f"only {kills} of {wanted} replays were killed"

    for h in HOURS:  # completion: each hour replays from the stream and ends marked
        r = replay_hour(spec, h, run_at(lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, lease_s=LEASE_S, now=LATER), idle_timeout_s=5)
        assert r.source == "kafka", r.note
        assert read_marker(lake, spec.name, h) is not None
    final = Counter(pairs(hour_rows(lake, metastore, spec.name)))
    assert final == expected
    live = {f.path for f in metastore.live_files(spec.name)}
    on_disk = {
        p for h in HOURS for p in lake.list_files(hour_dir(spec.name, h)) if p.endswith(".parquet")
    }
    assert on_disk == live, f"orphans: {sorted(on_disk - live)[:3]}"
    assert metastore.files_in_states(spec.name, ["pending", "replaced"]) == []
    metastore.dispose()
    record("replay: SIGKILL (points + random)", kills, sum(expected.values()), lost, dup, kills)
