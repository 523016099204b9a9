"""`config.startfrom` as a time, resolved through the metastore's landed files (the embedded
broker cannot answer offsets_for_times), reaching into the lake below the broker's low
watermark, and its validation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from connectors.gateway.startfrom import StartFromError, parse_startfrom, resolve_startfrom
from connectors.kafka import ensure_topic
from connectors.lake import Lake
from connectors.metastore import FileStats, LandingCommit, Metastore, landing_resource
from tests.support.gateway import (
    clicks_flow_spec,
    flow_env,
    land_all,
    produce_clicks,
    produce_history,
)


def _land(ms: Metastore, product: str, topic: str, partition: int, start: int, end: int, hour: str) -> None:
    """Record a landed file [start, end) of `hour`, through the metastore's own landing commit."""
    resource = landing_resource(partition, start)
    ms.claim(product, resource, "owner", "run", 30)
    path = f"{product}/{hour}/{topic}+{partition}+{start}.parquet"
    ms.register_pending(path, product=product, kind="landed", hour=hour, claim=resource, run_id="run",
                        partition=partition, start_offset=start)
    stats = FileStats(path, rows=end - start, bytes=1, end_offset=end, min_offset=start, max_offset=end - 1)
    ms.commit_landing(LandingCommit(product=product, topic=topic, partition=partition, start=start, end=end,
                                    at_eof=True, owner="owner", run_id="run", landed=[(stats, hour)], quarantined=[],
                                    consumed=end - start))
    ms.release(product, resource, "owner")


def test_a_time_starts_at_the_first_file_of_its_hour(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=2)
    produce_clicks(kafka_bootstrap, topic, 60, partition=0)
    spec = clicks_flow_spec(topic)
    ms = Metastore(f"sqlite:///{tmp_path / 'm.db'}")
    _land(ms, spec.name, topic, 0, 0, 20, "2026-11-30-07")
    _land(ms, spec.name, topic, 0, 20, 45, "2026-11-30-08")
    start, not_before = resolve_startfrom("2026-11-30T08:30:00Z", spec, [0, 1], kafka_bootstrap, ms)
    assert start == {0: 20, 1: 0}  # partition 1: nothing known, from its beginning
    assert not_before == int(datetime(2026, 11, 30, 8, 30, tzinfo=UTC).timestamp() * 1000)
    # a time after everything landed: from the landing's committed offset
    assert resolve_startfrom("2026-11-30T12:00:00Z", spec, [0, 1], kafka_bootstrap, ms)[0] == {0: 45, 1: 0}
    earliest, _ = resolve_startfrom("earliest", spec, [0, 1], kafka_bootstrap, ms)
    latest, _ = resolve_startfrom("latest", spec, [0, 1], kafka_bootstrap, ms)
    assert earliest == {0: 0, 1: 0} and latest == {0: 60, 1: 0}  # latest: the true end, by a fetch
    assert resolve_startfrom({"0": 7}, spec, [0, 1], kafka_bootstrap, ms)[0] == {0: 7, 1: 0}
    with pytest.raises(StartFromError, match="outside"):
        resolve_startfrom({"0": 61}, spec, [0, 1], kafka_bootstrap, ms)
    with pytest.raises(StartFromError, match="does not have"):
        resolve_startfrom({"5": 0}, spec, [0, 1], kafka_bootstrap, ms)
    ms.dispose()


@pytest.mark.parametrize("bad", ["yesterday", {"0": -1}, {"x": 1}, 12, "{not json"])
def test_bad_startfrom_values(bad):
    with pytest.raises(StartFromError):
        parse_startfrom(bad)


def test_startfrom_reaches_back_as_far_as_the_lake(tmp_path, broker, receiver):
    """Partition 0 was landed before the broker lost offsets 0..49, partition 1 was not: the lake
    serves 0's history, 1 starts at the broker's low watermark."""
    topic = f"test.startfrom.{uuid.uuid4().hex[:8]}"
    ensure_topic(broker.bootstrap, topic, 2)
    spec = clicks_flow_spec(topic)
    produce_history(broker.bootstrap, topic, 240)  # 120 per partition, a batch per 10
    ms = Metastore(f"sqlite:///{tmp_path / 'metastore.db'}")
    land_all(spec, Lake(str(tmp_path / "lake")), ms, broker.bootstrap, runs_of=80, partitions=[0])
    assert broker.truncate(topic, {0: 50, 1: 50}) == {0: 50, 1: 50}

    def resolve(value):
        return resolve_startfrom(value, spec, [0, 1], broker.bootstrap, ms)

    assert resolve("earliest") == ({0: 0, 1: 50}, None)
    assert resolve({"0": 10, "1": 60})[0] == {0: 10, 1: 60}
    with pytest.raises(StartFromError, match=r"offset 10 of partition 1 is outside the range available, 50\.\.120 "
                                             r"\(the broker holds 50\.\.120; the lake holds none of it\)"):
        resolve({"1": 10})
    with pytest.raises(StartFromError, match=r"offset 121 of partition 0 is outside the range available, 0\.\.120"):
        resolve({"0": 121})
    # a time below the low watermark: through the metastore's hours, into the lake
    start, not_before = resolve("2026-11-30T09:00:00Z")
    in_hour = [f.min_offset for f in ms.live_files(spec.name) if f.partition == 0 and f.hour >= "2026-11-30-09"]
    assert start == {0: min(in_hour), 1: 50} and 0 < start[0] < 50
    assert not_before == int(datetime(2026, 11, 30, 9, tzinfo=UTC).timestamp() * 1000)
    ms.dispose()

    with flow_env(tmp_path, broker.bootstrap, topic) as flow:  # the same metastore, through the API
        created = flow.subscribe("p-001", receiver.url, config={"startfrom": "earliest"})
        assert created["status"]["positions"] == {"0": 0, "1": 50}
        with flow.client("p-001") as c:
            resp = c.post(f"/subscriptions/{created['id']}/replay", json={"startfrom": {"0": 5, "1": 5}})
            assert resp.status_code == 400 and "50..120" in resp.json()["error"], resp.text
            resp = c.post(f"/subscriptions/{created['id']}/replay", json={"startfrom": {"0": 5, "1": 55}})
            assert resp.status_code == 200 and resp.json()["status"]["positions"] == {"0": 5, "1": 55}
