"""Asset events name only what changed, and what no wait can fix fails at once — under real
Airflow 3 (`airflow dags test` on tests/providers/dags), read back from Airflow's own database.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from connectors.lake import hour_key
from connectors.metastore import Metastore
from examples.demo_data import generate_clicks, produce
from tests.support import airflow as af

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300


def _events(home: Path, uri: str) -> list[dict]:
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ? "
                          "ORDER BY e.id", [uri]).fetchall()
    return [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]


def _run(env: dict, dag_id: str, when: datetime, log: Path) -> str:
    run = af.dags_test(env, dag_id, when.isoformat(), log)
    try:
        run.wait(TIMEOUT_S)
    finally:
        run.stop()
    return run.output()


def _task(home: Path, dag_id: str, task_id: str) -> tuple[str, int, dict | None]:
    """(state, try_number, return value) of the task's latest instance, from Airflow's database."""
    with sqlite3.connect(home / "airflow.db") as db:
        state, tries = db.execute("SELECT state, try_number FROM task_instance WHERE dag_id = ? AND task_id = ? "
                                  "ORDER BY start_date DESC LIMIT 1", [dag_id, task_id]).fetchone()
        row = db.execute("SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' "
                         "ORDER BY timestamp DESC LIMIT 1", [dag_id, task_id]).fetchone()
    value = row[0] if row else None
    value = json.loads(value) if isinstance(value, (str, bytes)) else value
    return state, tries, json.loads(value) if isinstance(value, str) else value


# Four `airflow dags test` runs of ~30-90 s each on 2 shared cores: more than the suite's 300 s.
@pytest.mark.timeout(900)
def test_events_only_for_changed_hours_and_refusals_at_once(airflow_template, tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=2)
    products = tmp_path / "products"
    products.mkdir()
    doc = yaml.safe_load((ROOT / "dataproducts" / "clicks.yaml").read_text())
    doc["topic"] = topic
    doc["sinks"]["lake"]["iceberg"] = {"enabled": False}
    doc["partitioning"]["start"] = "-3d"  # h1 is 1 day 4 hours back: before "-1d" from 00:00 to 04:00 UTC
    (products / "clicks.yaml").write_text(yaml.safe_dump(doc))
    fs = tmp_path / "flowsuite"
    h1 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1, hours=4)
    h2 = h1 + timedelta(hours=1)
    k1, k2 = hour_key(h1), hour_key(h2)
    home = af.fresh_home(airflow_template, tmp_path / "airflow")
    env = af.airflow_env(home, {
        "FLOWSUITE_HOME": str(fs), "FLOWSUITE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLOWSUITE_PRODUCTS_DIR": str(products), "FLOWSUITE_TEST_HOUR_AT": (h1 + timedelta(minutes=30)).isoformat(),
    })
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).parent / "dags")
    for hour, seed in ((h1, 1), (h2, 2)):
        produce(kafka_bootstrap, topic, generate_clicks(800, hours=1, invalid_rate=0.0, seed=seed,
                                                        now=hour + timedelta(minutes=59)), partitions=2)

    out = _run(env, "flowsuite_test_land_compact", h2 + timedelta(hours=3), tmp_path / "run1.log")
    assert "state=success" in out.split("DagRun Finished")[-1][:2000], out[-4000:]
    metastore = Metastore(f"sqlite:///{fs / 'metastore.db'}")
    g1, g2 = metastore.hour("clicks", k1).generation, metastore.hour("clicks", k2).generation
    hourly = _events(home, "flowsuite://clicks/hourly")
    assert [(e["hour"], e["generation"], e["rows"]) for e in hourly] == [(k1, g1, 800), (k2, g2, 800)]
    landed = _events(home, "flowsuite://clicks/landed")
    assert [(e["hour"], e["rows"], e["reopened"]) for e in landed] == [(k1, 800, False), (k2, 800, False)]
    # The engine checked consumed = landed + quarantined before committing (as for Dagster).
    _, _, summary = _task(home, "flowsuite_test_land_compact", "land")
    assert summary["accounted"] is True and summary["consumed"] == summary["landed"] + summary["quarantined"] == 1600

    # A doubled run: nothing landed, nothing compacted, so no event at all.
    out = _run(env, "flowsuite_test_land_compact", h2 + timedelta(hours=4), tmp_path / "run2.log")
    assert "state=success" in out.split("DagRun Finished")[-1][:2000], out[-4000:]
    assert "flowsuite://clicks/hourly: 0 asset event(s) (nothing changed)" in out
    assert len(_events(home, "flowsuite://clicks/hourly")) == 2 and len(_events(home, "flowsuite://clicks/landed")) == 2

    # Late records reopen h1 only: one event each, for h1, at its next generation.
    produce(kafka_bootstrap, topic, generate_clicks(5, hours=1, invalid_rate=0.0, seed=3,
                                                    now=h1 + timedelta(minutes=59)), partitions=2)
    out = _run(env, "flowsuite_test_land_compact", h2 + timedelta(hours=5), tmp_path / "run3.log")
    assert "state=success" in out.split("DagRun Finished")[-1][:2000], out[-4000:]
    assert metastore.hour("clicks", k1).generation == g1 + 1
    assert [(e["hour"], e["generation"], e["rows"]) for e in _events(home, "flowsuite://clicks/hourly")[2:]] == \
        [(k1, g1 + 1, 805)]
    assert [(e["hour"], e["rows"], e["reopened"]) for e in _events(home, "flowsuite://clicks/landed")[2:]] == \
        [(k1, 5, True)]

    # Refusals: at once, with the land operator's / a garbage hour's message; truncation on request.
    out = _run(env, "flowsuite_test_refusals", h2 + timedelta(hours=6), tmp_path / "run4.log")
    at = repr(env["FLOWSUITE_TEST_HOUR_AT"])
    assert f"no data product 'no_such_product' in {products} (known: clicks)" in out, out[-4000:]
    # The land operator's unknown product is a TerminalError: failed on its first try, retries unused.
    assert f"UnknownProductError: no data product 'no_such_product' in {products}" in out, out[-4000:]
    state, tries, _ = _task(home, "flowsuite_test_refusals", "land_unknown")
    assert state == "failed" and tries == 1, (state, tries)
    assert f"{at} is not an hour such as 2026-11-26-10 or 2026-11-26T10:00 (30:00 past the hour" in out
    assert out.count(f"{at} is not an hour such as") >= 2  # the sensor and the compact operator
    assert "running trigger in line" not in out and "Pausing task as DEFERRED" not in out
    assert f"clicks {k1} is whole at generation {g1 + 1}" in out  # wait_truncated: hour h1
    assert "DagRun failed" in out or "state=failed" in out
    assert len(_events(home, "flowsuite://clicks/hourly")) == 3  # compact_truncated: h1 already whole
