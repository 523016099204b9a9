"""Quarantine test helpers shared by the quarantine and replay-to-warehouse tests: a topic landed
under a max cost, so some records are quarantined for a rule a wider spec lets pass."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import yaml
from confluent_kafka import Producer

from connectors.flows import land
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.settings import REPO_ROOT
from connectors.spec import DataProductSpec

CLICKS = yaml.safe_load((REPO_ROOT / "dataproducts" / "clicks.yaml").read_text())


def spec_data(topic: str, max_cost: int = 100_000_000) -> dict:
    data = copy.deepcopy(CLICKS)
    data.update(name="replayclicks", topic=topic, quality={"on_invalid": "quarantine"})
    next(f for f in data["fields"] if f["name"] == "cost_micros")["max"] = max_cost
    return data


def click(i: int, cost: int = 10) -> bytes:
    return json.dumps({"event_id": f"e-{i}", "user_id": "u", "partner_id": "p-001", "ad_id": "a",
                       "kind": "click", "cost_micros": cost, "event_time": datetime.now(UTC).isoformat()}).encode()


N_GOOD, N_HIGH, N_JUNK = 30, 7, 3


def land_quarantine_demo(kafka_bootstrap: str, make_topic, tmp_path):
    """A topic landed under max 100M: 7 records above it and 3 malformed ones quarantined."""
    topic = make_topic(partitions=2)
    records = [(f"g{i}".encode(), click(i), i % 2) for i in range(N_GOOD)]
    records += [(f"h{i}".encode(), click(100 + i, cost=500_000_000), i % 2) for i in range(N_HIGH)]
    records += [(f"j{i}".encode(), b"{oops" + bytes([i]), i % 2) for i in range(N_JUNK)]
    p = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
    for key, value, part in records:
        p.produce(topic, value=value, key=key, partition=part)
    assert p.flush(30) == 0
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'm.db'}")
    spec = DataProductSpec.model_validate(spec_data(topic))
    result = land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=10)
    assert (result.landed, result.quarantined) == (N_GOOD, N_HIGH + N_JUNK)
    return topic, lake, metastore
