"""The quarantine replay operator under real Airflow, doubled: two Airflows (two homes, two
databases, one flowsuite metastore) run `flowsuite_partners_replay` at the same moment, as
two schedulers or a rerun clicked twice would. The metastore's claims let the quarantined
records that now pass land exactly once between them.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from confluent_kafka import Producer

from connectors.flows import land, quarantine_files
from connectors.formats import binary_headers
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import parse_spec_file
from tests.support import airflow as af

ROOT = Path(__file__).resolve().parents[2]
VALID, PLATINUM = 60, 7  # "platinum" is not a tier until the spec is fixed


def test_doubled_replay_tasks_land_the_quarantine_once(airflow_template, kafka_bootstrap, make_topic, tmp_path):
    topic = make_topic(partitions=2)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=4)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i in range(VALID + PLATINUM):
        pid, updated = f"p-{i:03d}", hour + timedelta(seconds=i)
        tier = "platinum" if i >= VALID else "gold"
        value = {"id": i, "partner_id": pid, "name": f"partner {i}", "tier": tier, "updated_at": updated.isoformat()}
        producer.produce(topic, key=pid.encode(), value=json.dumps(value).encode(), partition=i % 2,
                         headers=binary_headers(id=f"partners:{i}", source="crm/partners", type="crm.partners.row",
                                                time=updated, subject=pid))
    assert producer.flush(30) == 0

    products = tmp_path / "dataproducts"
    products.mkdir()
    spec_doc = yaml.safe_load((ROOT / "dataproducts" / "partners.yaml").read_text())
    spec_doc["topic"] = topic
    (products / "partners.yaml").write_text(yaml.safe_dump(spec_doc))
    fs_home = tmp_path / "flowsuite"
    fs_home.mkdir()
    lake, metastore = Lake(str(fs_home / "lake")), Metastore(f"sqlite:///{fs_home / 'metastore.db'}")
    landed = land(parse_spec_file(products / "partners.yaml"), lake=lake, metastore=metastore,
                  bootstrap=kafka_bootstrap, idle_timeout_s=5)
    assert (landed.landed, landed.quarantined) == (VALID, PLATINUM)

    # The owner fixes the spec: platinum is a tier. Then two Airflows replay at once.
    tier = next(f for f in spec_doc["fields"] if f["name"] == "tier")
    tier["enum"].append("platinum")
    (products / "partners.yaml").write_text(yaml.safe_dump(spec_doc))
    flowsuite = {"FLOWSUITE_HOME": str(fs_home), "FLOWSUITE_METASTORE_URL": f"sqlite:///{fs_home / 'metastore.db'}",
                 "FLOWSUITE_LAKE_URL": str(fs_home / "lake"), "FLOWSUITE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                 "FLOWSUITE_PRODUCTS_DIR": str(products)}
    runs = []
    try:
        for n in (1, 2):
            env = af.airflow_env(af.fresh_home(airflow_template, tmp_path / f"airflow{n}"), flowsuite)
            runs.append(af.dags_test(env, "flowsuite_partners_replay", hour.isoformat(), tmp_path / f"run{n}.log"))
        for run in runs:
            assert run.wait(240) == 0, run.output()[-4000:]
    finally:
        for run in runs:
            run.stop()

    replayed = []
    for run in runs:
        out = run.output()
        assert "DagRun Finished" in out and "state=success" in out.split("DagRun Finished")[-1][:2000], out[-4000:]
        replayed += [int(n) for n in re.findall(r"partners: (\d+) record\(s\) replayed", out)]
    assert len(replayed) == 2 and sum(replayed) == PLATINUM, replayed
    assert sum(f.rows for f in quarantine_files(metastore, "partners")) == 0
    rows = lake.read_tables([f.path for f in metastore.live_files("partners")], columns=["ce_id", "tier"])
    ids = rows.column("ce_id").to_pylist()
    assert sorted(ids) == sorted(f"partners:{i}" for i in range(VALID + PLATINUM))  # each once
    assert rows.column("tier").to_pylist().count("platinum") == PLATINUM
