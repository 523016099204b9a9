"""Quarantine list and replay: records that pass under a widened spec land once, the rest stay."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from connectors.flows import (
    quarantine_counts,
    read_quarantine,
    reason_kind,
    replay_id,
    replay_quarantine,
)
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec
from orchestration.cli import main
from tests.support.quarantine import N_GOOD, N_HIGH, N_JUNK, land_quarantine_demo, spec_data


@pytest.fixture
def landed(kafka_bootstrap, make_topic, tmp_path):
    """A topic landed under max 100M: 7 records above it and 3 malformed ones quarantined."""
    return land_quarantine_demo(kafka_bootstrap, make_topic, tmp_path)


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
    metastore.clock = lambda: time.time() + 1.0  # its lease has run out, without waiting
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


def test_reasons_group_by_a_stable_code_with_one_whole_message():
    from connectors.flows import quarantine_by_reason, reason_code

    long_type = "field 'cost_micros': expected int64, got string 'a very long value that once cut the reason short'"
    errors = [long_type, long_type.replace("a very", "another"), "field 'event_time': 'yesterday' is not an ISO-8601 timestamp",
              "value is not valid UTF-8 (byte 62)", "value is not valid UTF-8 (byte 7)", None]
    groups = quarantine_by_reason(errors)
    assert groups[0][:2] == ("wrong_type:cost_micros", 2) or groups[0][:2] == ("not_utf8", 2)
    by_code = {code: (n, sample) for code, n, sample in groups}
    assert by_code["wrong_type:cost_micros"] == (2, long_type)  # the whole message, never cut
    assert by_code["bad_timestamp:event_time"][1].endswith("is not an ISO-8601 timestamp")
    assert by_code["not_utf8"][0] == 2
    assert reason_code("field 'kind' = 'swipe' is not one of [a, b]") == "not_in_enum:kind"
    assert reason_code("something new") == "something new"
