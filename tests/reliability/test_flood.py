"""A flood: ten times the usual volume arrives at once and drains with bounded memory.

The usual volume is one sensor tick's worth (USUAL records); the flood is 10x that, produced
before the landing starts. One landing process lands the usual volume, then another lands the
flood in one run; psutil samples each process's RSS every 20 ms. The flood must drain
completely (every record once), and its peak RSS must stay within the stated bound: at most
BOUND_MB, and no more than 1.5x the usual run's peak plus 64 MB — memory follows the batch
size and the prefetch depth (4 batches), not the backlog.
"""

from __future__ import annotations

import json
import random
import threading
import time

import psutil

from examples.demo_data import generate_clicks, produce
from tests.support.reliability import audit_lake, clicks, start_land_worker
from tests.support.reliability_table import SEED, iterations, record

USUAL = 10_000
BOUND_MB = 600


def _land_measuring(spec, lake_url, meta_url, bootstrap, max_records) -> tuple[dict, float]:
    proc = start_land_worker(
        spec, lake_url, meta_url, bootstrap, max_records=max_records, batch_size=10_000
    )
    peak = 0
    ps = psutil.Process(proc.pid)
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)  # the memory sampler's period

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate(timeout=300)
    done.set()
    t.join()
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1]), peak / 2**20


def test_flood_of_ten_times_the_usual_volume_drains_with_bounded_memory(
    make_topic, kafka_bootstrap, tmp_path
):
    rng = random.Random(SEED + 23)
    topic = make_topic(partitions=2)
    spec = clicks(topic)
    lake_url, meta_url = str(tmp_path / "lake"), f"sqlite:///{tmp_path / 'meta.db'}"
    valid_by_key: dict[bytes, bool] = {}

    def arrive(n: int) -> None:
        generated = list(generate_clicks(n, hours=6, invalid_rate=0.01, seed=rng.randrange(10**9)))
        produce(kafka_bootstrap, topic, iter(generated), partitions=2)
        valid_by_key.update((k, ok) for k, _, ok in generated)

    arrive(USUAL)
    usual, usual_peak = _land_measuring(spec, lake_url, meta_url, kafka_bootstrap, 2 * USUAL)
    assert usual["consumed"] == USUAL
    wanted = iterations(quick=1, full=50)
    peaks = []
    for _ in range(wanted):
        arrive(10 * USUAL)
        flood, peak = _land_measuring(spec, lake_url, meta_url, kafka_bootstrap, 20 * USUAL)
        assert flood["consumed"] == 10 * USUAL, flood
        assert flood["landed"] + flood["quarantined"] == flood["consumed"]
        peaks.append(peak)
        assert peak <= BOUND_MB, f"flood landing peaked at {peak:.0f} MB RSS (bound {BOUND_MB} MB)"
        assert peak <= 1.5 * usual_peak + 64, (
            f"flood peak {peak:.0f} MB vs usual {usual_peak:.0f} MB"
        )
    a = audit_lake(tmp_path / "lake", spec.name, kafka_bootstrap, topic, 2, valid_by_key)
    assert a.exact, a
    record(
        "flood: 10x usual volume at once",
        wanted,
        a.records,
        a.lost,
        a.duplicated,
        wanted,
        f"peak RSS {max(peaks):.0f} MB (usual run {usual_peak:.0f} MB; bound {BOUND_MB} MB)",
    )
