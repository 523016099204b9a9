"""Quarantine list and replay: records that pass under a widened spec land once, the rest stay."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime

import pytest
import yaml
from confluent_kafka import Producer

from connectors.flows import (
    land,
    quarantine_counts,
    read_quarantine,
    reason_kind,
    replay_id,
    replay_quarantine,
)
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.settings import REPO_ROOT
from connectors.spec import DataProductSpec
from orchestration.cli import main

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


@pytest.fixture
def landed(kafka_bootstrap, make_topic, tmp_path):
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


def live_rows(lake: Lake, metastore: Metastore, product: str, kind: str = "landed"):
    return lake.read_tables(f.path for f in metastore.live_files(product, kinds=(kind,)))


def test_counts_by_reason_and_hour(landed):
    topic, lake, metastore = landed
    counts = quarantine_counts(lake, metastore, "replayclicks")
    by_reason = {}
    for c in counts:
        by_reason[c.reason] = by_reason.get(c.reason, 0) + c.records
    assert by_reason["field 'cost_micros' is above max 1e+08"] == N_HIGH
    assert sum(n for r, n in by_reason.items() if r.startswith("malformed JSON")) == N_JUNK
    assert reason_kind("field 'kind' = 'swipe' is not one of [a, b]") == "field 'kind' is not one of [a, b]"


def test_replay_after_widening_a_range_lands_exactly_those_once(landed):
    topic, lake, metastore = landed
    before = live_rows(lake, metastore, "replayclicks").num_rows
    narrow = DataProductSpec.model_validate(spec_data(topic))
    assert replay_quarantine(narrow, lake=lake, metastore=metastore).replayed == 0  # nothing passes yet

    wide = DataProductSpec.model_validate(spec_data(topic, max_cost=1_000_000_000))
    dry = replay_quarantine(wide, lake=lake, metastore=metastore, dry_run=True)
    assert dry.replayed == N_HIGH and live_rows(lake, metastore, "replayclicks").num_rows == before

    calls: list[tuple[int, int]] = []
    first = replay_quarantine(wide, lake=lake, metastore=metastore, progress=lambda d, t: calls.append((d, t)))
    assert (first.replayed, first.still_quarantined) == (N_HIGH, N_JUNK)
    files = len(first.files)
    assert calls == [(i, files) for i in range(files + 1)]  # progress: quarantine files done of all
    rows = live_rows(lake, metastore, "replayclicks")
    assert rows.num_rows == before + N_HIGH
    assert sorted(rows.column("event_id").to_pylist()) == sorted(
        [f"e-{i}" for i in range(N_GOOD)] + [f"e-{100 + i}" for i in range(N_HIGH)])
    assert all(".replay-" in p for p in first.files[0].landed_files)

    second = replay_quarantine(wide, lake=lake, metastore=metastore)
    assert second.replayed == 0
    assert live_rows(lake, metastore, "replayclicks").num_rows == before + N_HIGH
    q = read_quarantine(lake, metastore, "replayclicks")
    assert q.num_rows == N_JUNK and all(e.startswith("malformed JSON") for e in q.column("_error").to_pylist())
    assert sum(h.quarantined_rows for h in metastore.hours("replayclicks")) == N_JUNK
    assert sum(h.landed_rows for h in metastore.hours("replayclicks")) == N_GOOD + N_HIGH


def test_a_crashed_replay_is_taken_over_and_lands_once(landed):
    topic, lake, metastore = landed
    wide = DataProductSpec.model_validate(spec_data(topic, max_cost=1_000_000_000))
    # A replay that died after writing its files, before its commit: a dead claim and pending files.
    qf = metastore.live_files("replayclicks", kinds=("quarantine",))[0]
    claim = f"replay/{replay_id(qf.path)}"
    metastore.claim("replayclicks", claim, "dead-owner", "dead-run", lease_s=0.01)
    leftover = f"{qf.path.rsplit('/', 1)[0]}/leftover.parquet"
    metastore.register_pending(leftover, product="replayclicks", kind="landed", hour=qf.hour, claim=claim,
                               run_id="dead-run")
    lake.write_bytes(leftover, b"half written")
    time.sleep(0.05)  # its lease runs out
    result = replay_quarantine(wide, lake=lake, metastore=metastore)
    assert result.replayed == N_HIGH
    assert not lake.exists(leftover)
    assert metastore.files_in_states("replayclicks", ["pending"]) == []
    assert live_rows(lake, metastore, "replayclicks").num_rows == N_GOOD + N_HIGH


def test_a_replay_whose_commit_fails_leaves_the_quarantine_as_it_was(landed):
    topic, lake, metastore = landed
    wide = DataProductSpec.model_validate(spec_data(topic, max_cost=1_000_000_000))

    class Failing(Metastore):
        def commit_replay(self, **kwargs):
            raise RuntimeError("metastore went away")

    failing = Failing(metastore.url, engine=metastore.engine)
    with pytest.raises(RuntimeError, match="went away"):
        replay_quarantine(wide, lake=lake, metastore=failing)
    assert read_quarantine(lake, metastore, "replayclicks").num_rows == N_HIGH + N_JUNK
    assert live_rows(lake, metastore, "replayclicks").num_rows == N_GOOD
    assert metastore.files_in_states("replayclicks", ["pending"]) == []
    assert replay_quarantine(wide, lake=lake, metastore=metastore).replayed == N_HIGH


def test_cli_list_and_replay(landed, tmp_path, monkeypatch, capsys):
    topic, lake, metastore = landed
    products = tmp_path / "products"
    products.mkdir()
    (products / "replayclicks.yaml").write_text(yaml.safe_dump(spec_data(topic, max_cost=1_000_000_000)))
    monkeypatch.setenv("FLOWSUITE_PRODUCTS_DIR", str(products))
    monkeypatch.setenv("FLOWSUITE_LAKE_URL", lake.url)
    monkeypatch.setenv("FLOWSUITE_METASTORE_URL", metastore.url)
    assert main(["quarantine", "list", "replayclicks", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["records"] == N_HIGH + N_JUNK
    assert main(["quarantine", "replay", "replayclicks"]) == 0
    assert f"landed {N_HIGH} record(s)" in capsys.readouterr().out
    assert main(["quarantine", "list", "replayclicks"]) == 0
    assert "malformed JSON" in capsys.readouterr().out
    assert main(["quarantine", "list", "nosuch"]) == 1
