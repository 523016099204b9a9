"""PostgreSQL restarted under the pipeline: during a warehouse sync (the warehouse on PG) and
during landings whose metastore is on PG (claims, pending registrations, lease renewals and
the commit all go through it).

The machine's server is restarted for real (`pg_ctlcluster ... restart`, a fast shutdown that
drops every connection). A run either finishes (a later transaction reconnects) or fails with
a clear error; afterwards a rerun completes and nothing is lost or duplicated. Other tests
share the server, so `make test` restarts it once per scenario; FLOWSUITE_RELIABILITY=full
runs 50. The server is always started again, even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from connectors.flows import land
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.warehouse import WarehouseSink, sync
from tests.support import wait_for, wait_for_dead_claims
from tests.support.reliability import ROOT, audit_lake, clicks, start_land_worker
from tests.support.reliability_table import SEED, iterations, record
from tests.support.warehouse import expected_state, make_spec, produce_accounts, state


def _cluster() -> tuple[str, str] | None:
    if not shutil.which("pg_ctlcluster"):
        return None
    versions = sorted(
        (p.name for p in Path("/etc/postgresql").glob("*") if (p / "main").is_dir()), key=float
    )
    return (versions[-1], "main") if versions else None


CLUSTER = _cluster()
pytestmark = pytest.mark.skipif(
    CLUSTER is None or os.geteuid() != 0,
    reason="needs the machine's PostgreSQL cluster and the right to restart it",
)


def _pg_ctl(action: str) -> subprocess.CompletedProcess:
    assert CLUSTER is not None
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *CLUSTER, action],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _wait_up(timeout: float = 30.0) -> None:
    import psycopg

    errors: list[str] = []

    def accepts() -> bool:
        try:
            psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", connect_timeout=2).close()
            return True
        except psycopg.Error as exc:
            errors.append(str(exc))
            return False

    wait_for(accepts, timeout, interval=0.2, what="PostgreSQL to accept connections again",
             detail=lambda: f"last error: {errors[-1] if errors else None}")


@contextlib.contextmanager
def server_guard():
    """Whatever happens in the test, the server is running at the end."""
    try:
        yield
    finally:
        if _pg_ctl("status").returncode != 0:
            _pg_ctl("start")
        _wait_up()


def restart_postgres() -> float:
    started = time.monotonic()
    done = _pg_ctl("restart")
    assert done.returncode == 0, done.stderr
    _wait_up()
    return time.monotonic() - started


_SYNC_CHILD = """
import json, sys
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec
from connectors.warehouse import sync
spec = DataProductSpec.model_validate(json.loads(sys.argv[1]))
print("ready", flush=True)
sync(spec, lake=Lake(sys.argv[2]), metastore=Metastore(sys.argv[3]), url=sys.argv[4], batch_rows=100)
print("done", flush=True)
"""


def _retry(fn, attempts: int = 20):
    for i in range(attempts):
        try:
            return fn()
        except Exception:  # the server may still be coming back
            if i + 1 == attempts:
                raise
            time.sleep(0.5)  # a back-off between attempts while the server comes back
    return None


def test_postgres_restarted_during_warehouse_sync(kafka_bootstrap, topic, tmp_path, pg_url):
    rng = random.Random(SEED + 11)
    spec = make_spec(topic)
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'meta.db'}")
    wanted = iterations(quick=1)
    produced: list = []
    outcomes = {"finished": 0, "failed cleanly": 0}
    spec_json = json.dumps(
        spec.model_dump(),
        default=lambda v: v.total_seconds() if isinstance(v, timedelta) else v.isoformat(),
    )
    with server_guard():
        for i in range(wanted):
            produced += produce_accounts(
                kafka_bootstrap, topic, 3000, keys=400, seed=rng.randrange(10**9)
            )
            land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=5)
            env = {k: v for k, v in os.environ.items() if k != "FLOWSUITE_CRASH_AT"}
            env["PYTHONPATH"] = str(ROOT)
            proc = subprocess.Popen(
                [sys.executable, "-c", _SYNC_CHILD, spec_json, lake.url, metastore.url, pg_url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=ROOT,
            )
            try:
                assert proc.stdout.readline().strip() == b"ready", proc.stderr.read().decode()[
                    -2000:
                ]
                time.sleep(rng.uniform(0.3, 1.0))  # a seeded random moment of the sync for the restart
                restart_postgres()
                out, err = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if proc.returncode == 0:
                outcomes["finished"] += 1
            else:
                text = err.decode()
                last = text.strip().splitlines()[-1]
                assert last.startswith("connectors.warehouse.sink.WarehouseError"), last  # one clear line
                outcomes["failed cleanly"] += 1
            final = _retry(lambda: sync(spec, lake=lake, metastore=metastore, url=pg_url))
            assert final.offsets_after == {
                p: s.next_offset for p, s in metastore.committed_offsets(spec.name).items()
            }
            sink = WarehouseSink(spec, pg_url)
            try:
                got = {k: v[0] for k, v in state(sink).items()}
            finally:
                sink.dispose()
            want = expected_state(produced)
            lost = len(set(want) - set(got)) + sum(
                1 for k in want if k in got and got[k] != want[k]
            )
            assert got == want, f"iteration {i}: the table differs from the latest state per key"
    metastore.dispose()
    note = ", ".join(f"{k} {v}" for k, v in outcomes.items())
    record("PostgreSQL restart mid warehouse sync", wanted, len(produced), lost, 0, wanted, note)


def test_postgres_restarted_during_landing_with_metastore_on_postgres(
    kafka_bootstrap, make_topic, tmp_path, pg_url
):
    rng = random.Random(SEED + 13)
    from examples.demo_data import generate_clicks, produce

    topic = make_topic(partitions=2)
    # Its own product name: the session's PostgreSQL database also holds other tests' products.
    spec = clicks(topic, name=f"pg_restart_{uuid.uuid4().hex[:6]}")
    lake_url = str(tmp_path / "lake")
    wanted = iterations(quick=1)
    valid_by_key: dict[bytes, bool] = {}
    outcomes = {"finished": 0, "failed cleanly": 0}
    with server_guard():
        for _ in range(wanted):
            generated = list(
                generate_clicks(3000, hours=6, invalid_rate=0.03, seed=rng.randrange(10**9))
            )
            produce(kafka_bootstrap, topic, iter(generated), partitions=2)
            valid_by_key.update((k, ok) for k, _, ok in generated)
            # Small batches and many hours: many pending registrations, then the commit.
            proc = start_land_worker(
                spec, lake_url, pg_url, kafka_bootstrap, lease=3.0, batch_size=100
            )
            time.sleep(rng.uniform(1.0, 2.5))  # interpreter start, claims, registrations
            restart_postgres()
            out, err = proc.communicate(timeout=180)
            if proc.returncode == 0:
                outcomes["finished"] += 1
            else:
                text = err.decode()
                assert "OperationalError" in text or "ClaimLostError" in text, text[-3000:]
                outcomes["failed cleanly"] += 1

            def rerun():
                metastore = Metastore(pg_url)
                try:
                    for _ in range(10):
                        r = land(
                            spec,
                            lake=Lake(lake_url),
                            metastore=metastore,
                            bootstrap=kafka_bootstrap,
                            lease_s=3,
                            idle_timeout_s=5,
                        )
                        if r.consumed == 0 and not r.skipped:
                            return
                        if r.skipped:
                            wait_for_dead_claims(metastore, spec.name, 10)  # the failed run's 3 s lease runs out
                    raise AssertionError("did not drain")
                finally:
                    metastore.dispose()

            _retry(rerun, attempts=5)
            a = audit_lake(tmp_path / "lake", spec.name, kafka_bootstrap, topic, 2, valid_by_key)
            assert a.exact, f"after a PostgreSQL restart: {a}"
            metastore = Metastore(pg_url)
            try:
                assert metastore.files_in_states(spec.name, ["pending"]) == []
                live = {
                    f.path for f in metastore.live_files(spec.name, kinds=("landed", "quarantine"))
                }
            finally:
                metastore.dispose()
            on_disk = {
                str(p.relative_to(tmp_path / "lake"))
                for p in (tmp_path / "lake").rglob("*")
                if p.is_file()
            }
            assert on_disk == live, f"orphans: {sorted(on_disk - live)[:3]}"
    note = ", ".join(f"{k} {v}" for k, v in outcomes.items())
    record(
        "PostgreSQL restart mid landing (metastore on PG)",
        wanted,
        a.records,
        a.lost,
        a.duplicated,
        wanted,
        note,
    )
