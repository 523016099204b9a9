"""Landing when the metastore fails around its commit.

An *in-doubt* commit is the dangerous one: the database committed the files and offsets, but
the client lost the answer (a restarted server, a dropped connection). The run fails, and its
clean-up must not delete files that are live. Here the real metastore commits, then the
connection error is raised, as the client would see it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from connectors.flows import land
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import parse_spec_file
from examples.demo_data import generate_clicks, produce
from tests.support import positions, read_hive, read_topic

ROOT = Path(__file__).resolve().parents[3]


class LosesCommitAnswer(Metastore):
    """Commits for real, then reports the connection lost for the chosen partition."""

    def __init__(self, url: str, partition: int):
        super().__init__(url)
        self.partition = partition
        self.tripped = False

    def commit_landing(self, commit):
        reopened = super().commit_landing(commit)
        if commit.partition == self.partition and not self.tripped:
            self.tripped = True
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return reopened


@pytest.mark.parametrize("failing_partition", [0, 1])
def test_in_doubt_commit_keeps_live_files(failing_partition, make_topic, kafka_bootstrap, tmp_path, sqlite_url):
    topic = make_topic(partitions=2)
    generated = list(generate_clicks(3000, hours=3, invalid_rate=0.02, seed=11))
    produce(kafka_bootstrap, topic, iter(generated), partitions=2)
    valid = {key: ok for key, _, ok in generated}
    spec = parse_spec_file(ROOT / "dataproducts" / "clicks.yaml").model_copy(update={"topic": topic})
    lake = Lake(str(tmp_path / "lake"))

    faulty = LosesCommitAnswer(sqlite_url, failing_partition)
    with pytest.raises(OperationalError):
        land(spec, lake=lake, metastore=faulty, bootstrap=kafka_bootstrap, lease_s=1.0)
    assert faulty.tripped

    metastore = Metastore(sqlite_url)
    # The committed partition(s) kept every file the metastore lists as live.
    for f in metastore.live_files("clicks", kinds=("landed", "quarantine")):
        assert lake.exists(f.path), f"live file {f.path} was deleted by the failed run's clean-up"
    # Finish: whatever the failed run did not commit lands now; nothing twice.
    land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, lease_s=1.0)
    records = read_topic(kafka_bootstrap, topic, 2)
    landed = read_hive(tmp_path / "lake" / "clicks")
    assert positions(landed) == {pos: 1 for pos, (key, _) in records.items() if valid[key]}
    assert metastore.files_in_states("clicks", ["pending"]) == []


def test_offsets_of_another_topic_are_refused(make_topic, kafka_bootstrap, tmp_path, sqlite_url):
    """A spec whose topic changed must not apply the old topic's offsets to the new one."""
    from connectors.flows import OffsetsOfAnotherTopicError

    old_topic, new_topic = make_topic(partitions=1), make_topic(partitions=1)
    produce(kafka_bootstrap, old_topic, generate_clicks(300, hours=1, invalid_rate=0.0, seed=1), partitions=1)
    produce(kafka_bootstrap, new_topic, generate_clicks(500, hours=1, invalid_rate=0.0, seed=2), partitions=1)
    base = parse_spec_file(ROOT / "dataproducts" / "clicks.yaml")
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(sqlite_url)
    land(base.model_copy(update={"topic": old_topic}), lake=lake, metastore=metastore, bootstrap=kafka_bootstrap)

    with pytest.raises(OffsetsOfAnotherTopicError, match=f"belong to topic '{old_topic}'.*reset its committed offset"):
        land(base.model_copy(update={"topic": new_topic}), lake=lake, metastore=metastore, bootstrap=kafka_bootstrap)
    assert metastore.committed_offsets("clicks")[0].next_offset == 300  # nothing moved

    # The operator's explicit choice: land the new topic from its start.
    metastore.reset_offset("clicks", new_topic, 0, 0, run_id="test")
    result = land(base.model_copy(update={"topic": new_topic}), lake=lake, metastore=metastore, bootstrap=kafka_bootstrap)
    assert result.consumed == 500
