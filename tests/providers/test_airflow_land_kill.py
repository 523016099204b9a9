"""The land operator SIGKILLed mid-run under real Airflow, and retried by Airflow.

`airflow dags test --use-executor` runs the partners DAG on the LocalExecutor, so each try of
a task is a process of its own, supervised, talking to an `airflow api-server` (execution
API only, on loopback). The test kills the landing try with SIGKILL while it holds its
claim and has files pending; Airflow marks the try failed and retries it; the retry takes
the dead try's claims over at once (an earlier try of the same task instance), deletes its
pending files and lands the range again. Every record of the topic is then in exactly one
live file, nothing is pending, and the lake holds no file the metastore does not list; the
compact and sync tasks that follow make the hour whole and the warehouse current.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import yaml
from confluent_kafka import Producer

from connectors.formats import binary_headers
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import parse_spec_file
from connectors.warehouse import WarehouseSink
from tests.support import airflow as af
from tests.support import read_topic, wait_while_running

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 30_000
TASK_PROCESS = re.compile(r"airflow worker -- [0-9a-f]{8}-[0-9a-f-]{27}")  # the task runner of one try


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _produce_partners(bootstrap: str, topic: str, hour: datetime, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
    for i in range(n):
        pid = f"p-{i % 1000:03d}"
        updated = hour + timedelta(seconds=i % 3600, microseconds=i)
        value = {"id": i, "partner_id": pid, "name": f"partner {i}", "tier": ("gold", "silver", "bronze")[i % 3],
                 "country": "DE", "updated_at": updated.isoformat().replace("+00:00", "Z")}
        producer.produce(topic, key=pid.encode(), value=json.dumps(value).encode(), partition=i % 2,
                         headers=binary_headers(id=f"partners:{i}", source="crm/partners", type="crm.partners.row",
                                                time=updated, subject=pid))
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_while_running(proc, listening, timeout, f"the airflow api-server to listen on {port}", log)


def _task_processes(root: int) -> list[psutil.Process]:
    try:
        procs = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for p in procs:
        try:
            if TASK_PROCESS.search(" ".join(p.cmdline())):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_land_operator_sigkilled_mid_run_and_retried_by_airflow_lands_every_record_once(
        airflow_template, kafka_bootstrap, make_topic, tmp_path):
    topic = make_topic(partitions=2)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    _produce_partners(kafka_bootstrap, topic, hour, RECORDS)

    products = tmp_path / "dataproducts"
    products.mkdir()
    spec = yaml.safe_load((ROOT / "dataproducts" / "partners.yaml").read_text())
    spec["topic"] = topic
    (products / "partners.yaml").write_text(yaml.safe_dump(spec))
    fs_home = tmp_path / "flowsuite"
    metastore_url = f"sqlite:///{fs_home / 'metastore.db'}"
    port = _free_port()
    env = af.airflow_env(af.fresh_home(airflow_template, tmp_path / "airflow"), {
        "FLOWSUITE_HOME": str(fs_home), "FLOWSUITE_METASTORE_URL": metastore_url,
        "FLOWSUITE_LAKE_URL": str(fs_home / "lake"), "FLOWSUITE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLOWSUITE_PRODUCTS_DIR": str(products),
        "FLOWSUITE_AIRFLOW_RETRY_DELAY": "1", "FLOWSUITE_AIRFLOW_BATCH_SIZE": "500",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": "test-only-" + os.urandom(8).hex(),
        "AIRFLOW__CORE__PARALLELISM": "2",
    })
    fs_home.mkdir()
    metastore = Metastore(metastore_url)

    api_log = tmp_path / "api-server.log"
    with open(api_log, "wb") as out:
        api = subprocess.Popen([str(af.AIRFLOW), "api-server", "--apps", "execution", "-H", "127.0.0.1",
                                "-p", str(port), "-w", "1"], env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    run = None
    try:
        _wait_port(port, api, api_log, 180)
        run = af.dags_test(env, "flowsuite_partners", (hour + timedelta(hours=1)).isoformat(),
                           tmp_path / "dags-test.log", "--use-executor")
        # Kill the landing try while it holds its claims and has written files not yet committed.
        def mid_run() -> list[psutil.Process]:
            if metastore.files_in_states("partners", ["pending"]) and not metastore.committed_offsets("partners"):
                return _task_processes(run.proc.pid)
            return []

        for p in wait_while_running(run.proc, mid_run, 300, "the landing try mid-run (files pending, nothing "
                                    "committed)", run.log, interval=0.02):
            p.send_signal(signal.SIGKILL)
        assert run.wait(420) == 0, run.output()[-4000:]
    finally:
        if run is not None:
            run.stop()
        os.killpg(api.pid, signal.SIGKILL)
        api.wait(30)

    out = run.output()
    assert "DagRun Finished" in out and "state=success" in out.split("DagRun Finished")[-1][:2000], out[-4000:]
    logs = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "airflow" / "logs").rglob("*")
                     if p.is_file())
    assert re.search(r"took over the claim of airflow-[0-9a-f]{20}-try1", logs), logs[-4000:]

    # Exactly once: every record of the topic in one live file, nothing pending, no stray file.
    lake = Lake(str(fs_home / "lake"))
    live = metastore.live_files("partners")
    assert not metastore.files_in_states("partners", ["pending"])
    rows = lake.read_tables([f.path for f in live], columns=["_partition", "_offset", "ce_id"])
    positions = Counter(zip(rows.column("_partition").to_pylist(), rows.column("_offset").to_pylist(), strict=True))
    topic_records = read_topic(kafka_bootstrap, topic, 2)
    assert len(topic_records) == RECORDS
    assert set(positions) == set(topic_records) and max(positions.values()) == 1
    assert sorted(rows.column("ce_id").to_pylist()) == sorted(f"partners:{i}" for i in range(RECORDS))
    on_disk = {str(p.relative_to(lake.root)) for p in Path(lake.root).rglob("*.parquet")}
    assert on_disk == {f.path for f in live}
    offsets = metastore.committed_offsets("partners")
    assert {p: s.next_offset for p, s in offsets.items()} == {0: RECORDS // 2, 1: RECORDS // 2}
    # And the compact task that followed made the hour whole.
    rec = metastore.hour("partners", hour.strftime("%Y-%m-%d-%H"))
    assert rec.state == "compacted" and metastore.marked_hours("partners")[rec.hour] == rec.generation
    # The sync task: the warehouse holds the latest version (updated_at) of every partner.
    latest: dict[str, tuple[datetime, int]] = {}
    for i in range(RECORDS):
        pid, updated = f"p-{i % 1000:03d}", hour + timedelta(seconds=i % 3600, microseconds=i)
        latest[pid] = max(latest.get(pid, (updated, i)), (updated, i))
    sink = WarehouseSink(parse_spec_file(products / "partners.yaml"), f"sqlite:///{fs_home / 'warehouse.db'}")
    try:
        assert {r["partner_id"]: r["id"] for r in sink.read_rows()} == {p: i for p, (_, i) in latest.items()}
    finally:
        sink.dispose()
