"""The Airflow-free half of the provider (flowsuite_airflow.engine), in the main environment,
against a real metastore and lake; and, in `.venv-airflow`, that Airflow registers the provider.

The hour's states are made with the engine itself: land, compact, reopen, block.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.flows import compact_hour, land
from connectors.lake import Lake, hour_key
from connectors.metastore import Metastore
from connectors.spec import parse_spec_file
from examples.demo_data import generate_clicks, produce
from tests.support import airflow as af
from tests.support.runs import run_at

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "providers" / "airflow"))  # the provider's package, without Airflow

from flowsuite_airflow.engine import (  # noqa: E402
    FlowsuiteConfig,
    UnknownProductError,
    asset_uri,
    claim_run_id,
    hour_status,
    task_hour,
    try_is_dead,
)


def test_a_retry_takes_over_only_earlier_tries_of_the_same_task_instance():
    try2 = claim_run_id("dag", "manual__2026-11-30T10:00:00+00:00", "land", -1, 2)
    assert len(try2) <= 64  # fs_claims.run_id / fs_files.run_id are VARCHAR(64)
    is_dead = try_is_dead(try2)
    assert is_dead(claim_run_id("dag", "manual__2026-11-30T10:00:00+00:00", "land", -1, 1))
    assert not is_dead(claim_run_id("dag", "manual__2026-11-30T10:00:00+00:00", "land", -1, 3))
    assert not is_dead(try2)
    assert not is_dead(claim_run_id("dag", "manual__2026-11-30T11:00:00+00:00", "land", -1, 1))  # another run
    assert not is_dead(claim_run_id("dag", "manual__2026-11-30T10:00:00+00:00", "land", 0, 1))  # another map index
    assert not is_dead("3f2c0e9e-7c1b-4f57-9d8e-3c1b2a4d5e6f")  # a Dagster run keeps its lease


def test_config_from_env_and_connection_extras(tmp_path):
    env = {"FLOWSUITE_HOME": str(tmp_path), "FLOWSUITE_KAFKA_SASL_MECHANISM": "PLAIN"}
    base = FlowsuiteConfig.from_env(env)
    assert base.metastore_url == f"sqlite:///{tmp_path.resolve() / 'metastore.db'}"
    assert base.lake_url == str(tmp_path.resolve() / "lake")
    conn = base.with_extras({"metastore_url": "postgresql+psycopg://u:secret@db/fs", "kafka": {"security.protocol": "SASL_SSL"}},
                            login="svc", password="pw")
    assert conn.metastore_url == "postgresql+psycopg://u:secret@db/fs" and conn.lake_url == base.lake_url
    assert dict(conn.kafka_config) == {"sasl.mechanism": "PLAIN", "security.protocol": "SASL_SSL",
                                       "sasl.username": "svc", "sasl.password": "pw"}
    assert "secret" not in repr(conn) and "pw" not in repr(conn)
    assert asset_uri("clicks", "hourly") == "flowsuite://clicks/hourly"
    with pytest.raises(ValueError):
        asset_uri("clicks", "files")


def test_task_hours_on_the_hour_only_unless_truncation_is_asked_for():
    for text in ("2026-12-07-03", "2026-12-07-03:00", "2026-12-07T03", "2026-12-07T03:00", "2026-12-07 03:00",
                 "2026-12-07T03:00:00+00:00", "2026-12-07T04:00:00+01:00"):
        assert task_hour(text) == "2026-12-07-03", text
    assert task_hour(datetime(2026, 12, 7, 3, tzinfo=UTC)) == "2026-12-07-03"
    with pytest.raises(ValueError) as garbage:
        task_hour("yesterday")
    assert str(garbage.value) == "'yesterday' is not an hour such as 2026-11-26-10 or 2026-11-26T10:00"
    for text in ("2026-12-07T03:30", "2026-12-07-03:30", "2026-12-07 03:30", "2026-12-07T03:00:01",
                 "2026-12-07T03:00:00.5+00:00", "2026-12-07T03:00:00+05:30"):
        with pytest.raises(ValueError) as off:
            task_hour(text)
        assert str(off.value).startswith(f"{text!r} is not an hour such as 2026-11-26-10 or 2026-11-26T10:00 ("), text
        assert "truncate_to_hour=True" in str(off.value)
    with pytest.raises(ValueError, match="30:00 past the hour"):
        task_hour(datetime(2026, 12, 7, 3, 30, tzinfo=UTC))
    assert task_hour("2026-12-07T03:30", truncate_to_hour=True) == "2026-12-07-03"
    assert task_hour(datetime(2026, 12, 7, 3, 59, 59, tzinfo=UTC), truncate_to_hour=True) == "2026-12-07-03"
    with pytest.raises(ValueError, match="is not an hour such as"):
        task_hour("nonsense", truncate_to_hour=True)


def test_an_unknown_product_names_the_known_ones(tmp_path):
    config = FlowsuiteConfig.from_env({"FLOWSUITE_HOME": str(tmp_path), "FLOWSUITE_PRODUCTS_DIR": str(ROOT / "dataproducts")})
    assert config.spec("clicks").name == "clicks"
    with pytest.raises(UnknownProductError) as exc:
        config.spec("no_such_product")
    assert str(exc.value).startswith(f"no data product 'no_such_product' in {ROOT / 'dataproducts'} (known: ")
    assert "clicks" in str(exc.value) and "partners" in str(exc.value)
    assert isinstance(exc.value, ValueError)  # callers that caught ValueError still do


def test_hour_status_follows_the_metastore(tmp_path, kafka_bootstrap, make_topic):
    topic = make_topic(partitions=2)
    spec = parse_spec_file(ROOT / "dataproducts" / "clicks.yaml").model_copy(update={"topic": topic})
    lake, metastore = Lake(str(tmp_path / "lake")), Metastore(f"sqlite:///{tmp_path / 'm.db'}")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    hour = hour_key(start)

    def land_clicks(n: int, seed: int) -> None:
        produce(kafka_bootstrap, topic, generate_clicks(n, 1, 0.0, seed, now=start + timedelta(minutes=59)), 2)
        land(spec, lake=lake, metastore=metastore, bootstrap=kafka_bootstrap, idle_timeout_s=5)

    assert hour_status(metastore, lake, "clicks", hour).state == "waiting"
    land_clicks(400, 1)
    status = hour_status(metastore, lake, "clicks", hour)
    assert (status.state, status.info) == ("waiting", None) and "is open" in status.reason

    first = compact_hour(spec, hour, run_at(lake=lake, metastore=metastore))
    status = hour_status(metastore, lake, "clicks", hour)
    assert status.state == "ready", status.reason
    info = status.info
    assert json.loads(json.dumps(info)) == info
    assert (info["generation"], info["rows"]) == (first.generation, 400)
    assert [f["path"] for f in info["files"]] == sorted(first.files_after)
    assert all(Path(f["uri"]).is_file() for f in info["files"])
    assert sum(last - first_ + 1 for runs in info["offset_ranges"].values() for first_, last in runs) == 400

    land_clicks(3, 2)  # late records reopen the hour: no longer whole
    status = hour_status(metastore, lake, "clicks", hour)
    assert status.state == "waiting" and "reopened" in status.reason
    compact_hour(spec, hour, run_at(lake=lake, metastore=metastore))
    status = hour_status(metastore, lake, "clicks", hour)
    assert status.state == "ready" and status.info["generation"] == first.generation + 1
    assert status.info["rows"] == 403

    metastore.block_hours("clicks", [hour], "partner_id does not match ^p-[0-9]{3}$")
    status = hour_status(metastore, lake, "clicks", hour)
    assert status.state == "blocked" and "partner_id does not match" in status.reason


def test_airflow_registers_the_provider_and_checks_flowsuite_uris():
    reason = af.missing_reason()
    if reason:
        from tests.support.services import unavailable

        unavailable(reason)
    code = """
import json
from airflow.providers_manager import ProvidersManager
from airflow.sdk import Asset
pm = ProvidersManager()
info = pm.providers["flowsuite-provider-airflow"]
hook = pm.hooks["flowsuite"]
bad = []
for uri in ("flowsuite://clicks/nope", "flowsuite://Clicks/landed"):
    try:
        Asset(uri)
    except ValueError as exc:
        bad.append(str(exc))
print(json.dumps({"version": info.version, "hook": hook.hook_class_name if hook else None,
                  "ok": Asset("flowsuite://clicks/hourly/").uri, "bad": bad}))
"""
    proc = subprocess.run([str(af.AIRFLOW_PYTHON), "-c", code], capture_output=True, text=True, timeout=300,
                          env=af.airflow_env(Path("/nonexistent-airflow-home"), {}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["version"] == "0.1.0"
    assert out["hook"] == "flowsuite_airflow.hooks.flowsuite.FlowsuiteHook"
    assert out["ok"] == "flowsuite://clicks/hourly"
    assert len(out["bad"]) == 2 and "nope" in out["bad"][0]


def test_one_error_mapping_terminal_fails_at_once_transient_is_retried():
    """flowsuite_airflow.errors under real Airflow: a TerminalError becomes AirflowFailException
    (the task's retries are not used), a TransientError a plain AirflowException (retried)."""
    reason = af.missing_reason()
    if reason:
        from tests.support.services import unavailable

        unavailable(reason)
    code = """
import json
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from connectors.engine import UnknownProductError
from connectors.flows import RecordsUnaccountedError
from connectors.kafka import HistoryLostError, KafkaReadError
from flowsuite_airflow.errors import engine_errors

out = {}
for exc in (KafkaReadError("broker away"), HistoryLostError("clicks", 0, 9, 0, 5),
            UnknownProductError("no data product 'x'"), RecordsUnaccountedError("clicks[0]: consumed 3 != 2 + 0")):
    try:
        with engine_errors():
            raise exc
    except AirflowException as mapped:
        out[type(exc).__name__] = [isinstance(mapped, AirflowFailException), str(mapped), mapped.__cause__ is exc]
print(json.dumps(out))
"""
    proc = subprocess.run([str(af.AIRFLOW_PYTHON), "-c", code], capture_output=True, text=True, timeout=300,
                          env=af.airflow_env(Path("/nonexistent-airflow-home"), {}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["KafkaReadError"] == [False, "KafkaReadError: broker away", True]  # retried
    assert got["HistoryLostError"][0] is True  # a KafkaReadError, but terminal: no retry
    assert got["UnknownProductError"] == [True, "UnknownProductError: no data product 'x'", True]
    assert got["RecordsUnaccountedError"][0] is True
