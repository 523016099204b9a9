"""Planted secrets never appear in logs, Dagster event metadata, error messages or the CLI.

Distinctive secrets are planted where flowsuite takes them — the metastore URL's password,
the warehouse URL's password, the SASL password, the AWS secret key, the SSL key password —
then a landing and a warehouse sync run through Dagster (the code location's own `defs()`,
configured by the environment) and through the CLI, once successfully and once failing (the
warehouse unreachable, with its own planted password). Every event of every run (serialized
whole: messages, metadata, errors and their causes), every captured Python log record and
everything written to stdout/stderr is searched for each secret.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from examples.demo_data import generate_clicks, produce

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "metastore password": "metaPW-7f3a9c-SECRET",
    "warehouse password": "whPW-51b2e0-SECRET",
    "failing warehouse password": "failPW-0c9d77-SECRET",
    "SASL password": "saslPW-a8e1f4-SECRET",
    "AWS secret key": "awsKEY-3e6b2d-SECRET",
    "SSL key password": "sslPW-9d0c41-SECRET",
}


def _with_password(url: str, password: str) -> str:
    # postgresql+psycopg://postgres@host:port/db → ...postgres:<password>@host...
    scheme, rest = url.split("://", 1)
    user, hostpart = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{hostpart}"


def _leaks(text: str) -> list[str]:
    return [what for what, secret in SECRETS.items() if secret in text]


@pytest.fixture
def planted(flowsuite_home, tmp_path, kafka_bootstrap, make_topic, pg_fresh_url, monkeypatch):
    topic = make_topic(partitions=2)
    products = tmp_path / "products"
    products.mkdir()
    spec = yaml.safe_load((ROOT / "dataproducts" / "clicks.yaml").read_text())
    spec["topic"] = topic
    (products / "clicks.yaml").write_text(yaml.safe_dump(spec))
    env = {
        "FLOWSUITE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLOWSUITE_PRODUCTS_DIR": str(products),
        "FLOWSUITE_METASTORE_URL": _with_password(pg_fresh_url, SECRETS["metastore password"]),
        "FLOWSUITE_WAREHOUSE_URL": _with_password(pg_fresh_url, SECRETS["warehouse password"]),
        # PLAINTEXT with a SASL password set: librdkafka ignores it, flowsuite must not print it.
        "FLOWSUITE_KAFKA_SASL_MECHANISM": "PLAIN",
        "FLOWSUITE_KAFKA_SASL_USERNAME": "flowsuite",
        "FLOWSUITE_KAFKA_SASL_PASSWORD": SECRETS["SASL password"],
        "AWS_ACCESS_KEY_ID": "AKIAFLOWSUITETEST",
        "AWS_SECRET_ACCESS_KEY": SECRETS["AWS secret key"],
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    produce(kafka_bootstrap, topic, generate_clicks(600, 2, 0.05, seed=3), partitions=2)
    return env, topic


def _event_texts(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [dg.serialize_value(entry) for entry in instance.all_logs(run_id)]


def _run_ingest(instance) -> tuple[bool, list[str]]:
    from orchestration.definitions import defs

    job = defs().resolve_job_def("clicks_ingest")
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    return result.success, _event_texts(instance, result.run_id)


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("flowsuite")), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=180,
    )


def test_planted_secrets_never_leak(planted, kafka_bootstrap, caplog, capfd, monkeypatch):
    env, topic = planted
    caplog.set_level(logging.DEBUG)
    texts: dict[str, str] = {}
    with dg.instance_for_test() as instance:
        ok, events = _run_ingest(instance)
        assert ok, "\n".join(e for e in events if "FAILURE" in e)[-3000:]
        assert any("ASSET_MATERIALIZATION" in e for e in events)
        texts["dagster events (success)"] = "\n".join(events)

        # The warehouse unreachable, with its own password: the run fails, the error is clear.
        monkeypatch.setenv(
            "FLOWSUITE_WAREHOUSE_URL",
            f"postgresql+psycopg://flowsuite:{SECRETS['failing warehouse password']}@127.0.0.1:1/nowhere",
        )
        produce(kafka_bootstrap, topic, generate_clicks(100, 1, 0.0, seed=4), partitions=2)
        ok, events = _run_ingest(instance)
        assert not ok, "the run should fail on the unreachable warehouse"
        failures = [e for e in events if "STEP_FAILURE" in e]
        assert failures and "127.0.0.1:1" in failures[0], "the failure should say where"
        texts["dagster events (failure)"] = "\n".join(events)

    # The CLI, successful and failing, with an SSL key password planted too.
    cli_env = {**env, "FLOWSUITE_KAFKA_SSL_KEY_PASSWORD": SECRETS["SSL key password"]}
    produce(kafka_bootstrap, topic, generate_clicks(50, 1, 0.0, seed=5), partitions=2)
    for name, args, extra in [
        ("cli land", ["land", "clicks"], {}),
        ("cli warehouse sync", ["warehouse", "sync", "clicks"], {}),
        ("cli offsets show", ["offsets", "show", "clicks"], {}),
        (
            "cli warehouse sync (failing)",
            ["warehouse", "sync", "clicks"],
            {
                "FLOWSUITE_WAREHOUSE_URL": f"postgresql+psycopg://flowsuite:{SECRETS['failing warehouse password']}@127.0.0.1:1/nowhere"
            },
        ),
        (
            "cli land (failing metastore)",
            ["land", "clicks"],
            {
                "FLOWSUITE_METASTORE_URL": f"postgresql+psycopg://flowsuite:{SECRETS['metastore password']}@127.0.0.1:1/nowhere"
            },
        ),
    ]:
        done = _cli(args, {**cli_env, **extra})
        texts[name] = done.stdout + done.stderr
        if "failing" in name:
            assert done.returncode != 0 and "127.0.0.1" in texts[name], texts[name][
                -2000:
            ]  # says where
        else:
            assert done.returncode == 0, texts[name][-2000:]

    out, err = capfd.readouterr()
    texts["captured stdout/stderr"] = out + err
    texts["python log records"] = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records
    )
    leaks = {where: _leaks(text) for where, text in texts.items() if _leaks(text)}
    assert leaks == {}, f"secrets leaked: {leaks}"
