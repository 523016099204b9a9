"""A landing whose metastore fails between the commits of two partitions (the connection
dropped: PostgreSQL restarted) must keep what it already committed.

Partition 0's files are committed, then partition 1's commit raises. The run fails, and its
clean-up may delete only the files that are still pending — never partition 0's live ones.
The next landing lands partition 1, and every record is in the lake exactly once.
"""

from __future__ import annotations

import sqlalchemy as sa

from connectors.flows import land
from connectors.lake import Lake
from connectors.metastore import Metastore
from examples.demo_data import generate_clicks, produce
from tests.support.reliability import audit_lake, clicks
from tests.support.reliability_table import record


class DropsConnectionOnSecondCommit(Metastore):
    """A metastore whose connection drops during the second commit of a run."""

    commits = 0

    def commit_landing(self, commit):
        type(self).commits += 1
        if type(self).commits == 2:
            raise sa.exc.OperationalError(
                "COMMIT", {}, Exception("server closed the connection unexpectedly")
            )
        return super().commit_landing(commit)


def test_a_failed_second_commit_keeps_the_first_partitions_files(topic, kafka_bootstrap, tmp_path):
    generated = list(generate_clicks(1000, hours=2, invalid_rate=0.02, seed=11))
    produce(kafka_bootstrap, topic, iter(generated), partitions=2)
    valid_by_key = {k: ok for k, _, ok in generated}
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    lake = Lake(str(tmp_path / "lake"))
    flaky = DropsConnectionOnSecondCommit(url)
    try:
        land(clicks(topic), lake=lake, metastore=flaky, bootstrap=kafka_bootstrap, idle_timeout_s=5)
        raise AssertionError("the landing should have failed on its second commit")
    except sa.exc.OperationalError:
        pass
    metastore = Metastore(url)
    live = metastore.live_files("clicks", kinds=("landed", "quarantine"))
    assert live, "the first partition's commit should have stayed"
    missing = [f.path for f in live if not lake.exists(f.path)]
    assert missing == [], f"committed files deleted by the failed run's clean-up: {missing[:3]}"
    land(clicks(topic), lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=5)
    a = audit_lake(tmp_path / "lake", "clicks", kafka_bootstrap, topic, 2, valid_by_key)
    assert a.exact, a
    record("metastore fails between two partition commits", 1, a.records, a.lost, a.duplicated, 1)
