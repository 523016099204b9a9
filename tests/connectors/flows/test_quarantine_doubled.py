"""Two quarantine replays at once: the one that lists a quarantine file before the other has
replayed it must skip it, and never delete the other's live files.

Found by tests/providers/test_airflow_replay.py (two Airflows replaying at the same moment):
the late replay's register_pending refused to shadow the winner's committed file (same name),
and its clean-up then deleted that committed file from the lake — rows the metastore lists
as live, gone. Here the race is made deterministic: the second replay is handed the listing,
and the quarantine files' contents, as they were before the first one ran.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from confluent_kafka import Producer

import connectors.flows.quarantine as quarantine
from connectors.flows import land, quarantine_files, replay_quarantine
from connectors.formats import binary_headers
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import parse_spec_file

ROOT = Path(__file__).resolve().parents[3]


def test_a_replay_holding_a_stale_listing_skips_and_deletes_nothing(tmp_path, kafka_bootstrap, make_topic,
                                                                    monkeypatch):
    topic = make_topic(partitions=2)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(20):
        pid, updated = f"p-{i:03d}", hour + timedelta(seconds=i)
        value = {"id": i, "partner_id": pid, "name": "n", "tier": "platinum" if i % 4 == 0 else "gold",
                 "updated_at": updated.isoformat()}
        producer.produce(topic, key=pid.encode(), value=json.dumps(value).encode(), partition=i % 2,
                         headers=binary_headers(id=f"partners:{i}", source="crm/partners", type="row",
                                                time=updated, subject=pid))
    assert producer.flush(30) == 0
    doc = yaml.safe_load((ROOT / "dataproducts" / "partners.yaml").read_text())
    doc["topic"] = topic
    path = tmp_path / "partners.yaml"
    path.write_text(yaml.safe_dump(doc))
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'm.db'}")
    assert land(parse_spec_file(path), lake=lake, metastore=metastore, bootstrap=kafka_bootstrap,
                idle_timeout_s=5).quarantined == 5

    next(f for f in doc["fields"] if f["name"] == "tier")["enum"].append("platinum")
    path.write_text(yaml.safe_dump(doc))
    spec = parse_spec_file(path)
    stale = quarantine_files(metastore, "partners")
    read_before = {f.path: Path(lake.full(f.path)).read_bytes() for f in stale}  # as the late replay read them
    first = replay_quarantine(spec, lake=lake, metastore=metastore)
    assert first.replayed == 5
    for rel, data in read_before.items():  # the late replay read them before `first` deleted them
        assert not Path(lake.full(rel)).exists()
        Path(lake.full(rel)).write_bytes(data)

    monkeypatch.setattr(quarantine, "quarantine_files", lambda *_: stale)  # listed before `first` ran
    second = replay_quarantine(spec, lake=lake, metastore=metastore)
    assert second.replayed == 0
    assert all("replayed by another run" in (f.skipped or "") for f in second.files)

    live = metastore.live_files("partners")
    assert all(Path(lake.full(f.path)).is_file() for f in live)  # nothing live was deleted
    ids = lake.read_tables([f.path for f in live], columns=["ce_id"]).column("ce_id").to_pylist()
    assert sorted(ids) == sorted(f"partners:{i}" for i in range(20))
