"""The engine's front door (connectors/engine.py): built from Settings alone, never the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.engine import Engine, UnknownProductError
from connectors.errors import TerminalError
from connectors.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def _settings(tmp_path: Path, **more: str):
    return load_settings({"FLOWSUITE_HOME": str(tmp_path), "FLOWSUITE_PRODUCTS_DIR": str(ROOT / "dataproducts"),
                          **more})


def test_s3_options_come_from_the_settings_not_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSUITE_S3_ENDPOINT", "http://from-the-environment:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    engine = Engine.from_settings(_settings(tmp_path, FLOWSUITE_S3_ENDPOINT="http://127.0.0.1:9000",
                                            AWS_REGION="eu-west-1", AWS_ACCESS_KEY_ID="AKIA-TEST",
                                            AWS_SECRET_ACCESS_KEY="s3cr3t", FLOWSUITE_LAKE_URL="s3://bucket/lake"))
    lake = engine.lake()
    assert lake.is_s3 and lake.s3.endpoint_url == "http://127.0.0.1:9000" and lake.s3.access_key_id == "AKIA-TEST"
    assert engine.lake() is lake  # one S3 filesystem per engine
    bare = Engine.from_settings(_settings(tmp_path, FLOWSUITE_LAKE_URL="s3://bucket/lake"))
    assert bare.s3.endpoint_url is None and bare.s3.access_key_id is None  # the variables above were not read
    assert "AKIA-TEST" not in repr(engine) + repr(engine.s3) and "s3cr3t" not in repr(engine) + repr(engine.s3)


def test_one_metastore_per_url_and_the_kafka_pass_through(tmp_path):
    settings = _settings(tmp_path, FLOWSUITE_KAFKA_SECURITY_PROTOCOL="SASL_SSL", FLOWSUITE_KAFKA_SASL_PASSWORD="pw")
    a, b = Engine.from_settings(settings), Engine.from_settings(settings)
    assert a.metastore() is b.metastore()
    assert a.kafka() == {"security.protocol": "SASL_SSL", "sasl.password": "pw"}
    assert "pw" not in repr(a)
    run = a.run_context(run_id="r-1", lease_s=5.0)
    assert (run.lake, run.metastore, run.bootstrap, run.run_id, run.lease_s) == (a.lake(), a.metastore(),
                                                                                 "127.0.0.1:9092", "r-1", 5.0)
    assert a.run_context().run_id.startswith("adhoc-")


def test_an_unknown_product_is_one_terminal_message_naming_the_known_ones(tmp_path):
    engine = Engine.from_settings(_settings(tmp_path))
    assert engine.spec("clicks", checks=False).name == "clicks"
    with pytest.raises(UnknownProductError) as exc:
        engine.spec("nope", checks=False)
    assert isinstance(exc.value, TerminalError) and isinstance(exc.value, ValueError)
    assert str(exc.value).startswith(f"no data product 'nope' in {ROOT / 'dataproducts'} (known: ")
    assert "clicks" in str(exc.value)


def test_spec_checks_run_only_when_asked(tmp_path):
    calls = []
    engine = Engine.from_settings(_settings(tmp_path), spec_checks=lambda: calls.append(1) or [])
    engine.specs(checks=False)
    assert calls == []
    engine.specs()
    assert calls == [1]
