"""`config.startfrom` as a time, resolved through the metastore's landed files (the embedded
broker cannot answer offsets_for_times), and its validation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.gateway.startfrom import StartFromError, parse_startfrom, resolve_startfrom
from connectors.metastore import FileStats, Metastore, landing_resource
from tests.connectors.gateway.flow_support import clicks_flow_spec, produce_clicks


def _land(ms: Metastore, product: str, topic: str, partition: int, start: int, end: int, hour: str) -> None:
    """Record a landed file [start, end) of `hour`, through the metastore's own landing commit."""
    resource = landing_resource(partition, start)
    ms.claim(product, resource, "owner", "run", 30)
    path = f"{product}/{hour}/{topic}+{partition}+{start}.parquet"
    ms.register_pending(path, product=product, kind="landed", hour=hour, claim=resource, run_id="run",
                        partition=partition, start_offset=start)
    stats = FileStats(path, rows=end - start, bytes=1, end_offset=end, min_offset=start, max_offset=end - 1)
    ms.commit_landing(product=product, topic=topic, partition=partition, start=start, end=end, at_eof=True,
                      owner="owner", run_id="run", landed=[(stats, hour)], quarantined=[], consumed=end - start)
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
