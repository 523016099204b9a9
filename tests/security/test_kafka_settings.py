"""Kafka security settings (security.protocol, sasl.*, ssl.*) pass through unchanged, from the
environment and from the resource, to every client flowsuite builds — and the settings that
make a read an exact range cannot be overridden by them."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaException

from connectors.kafka import consumer_config
from connectors.settings import load_settings
from orchestration.resources import KAFKA_ENV_SETTINGS, FlowsuiteResource, kafka_config_from_env

SECURITY = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "flowsuite-svc",
    "sasl.password": "pw-passthrough",
    "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt",
    "ssl.certificate.location": "/etc/flowsuite/client.pem",
    "ssl.key.location": "/etc/flowsuite/client.key",
    "ssl.key.password": "key-pw",
    "ssl.endpoint.identification.algorithm": "https",
}


def test_consumer_config_passes_security_settings_through_unchanged():
    conf = consumer_config("broker:9093", "flowsuite.clicks", SECURITY)
    assert {k: conf[k] for k in SECURITY} == SECURITY
    assert conf["bootstrap.servers"] == "broker:9093" and conf["group.id"] == "flowsuite.clicks"


def test_exact_read_settings_cannot_be_overridden():
    conf = consumer_config(
        "b:1", "g", {**SECURITY, "enable.auto.commit": True, "auto.offset.reset": "latest"}
    )
    assert conf["enable.auto.commit"] is False and conf["auto.offset.reset"] == "error"


def test_environment_variables_map_to_librdkafka_names():
    env = {var: f"value-of-{var}" for var in KAFKA_ENV_SETTINGS}
    got = kafka_config_from_env(env)
    assert got == {setting: f"value-of-{var}" for var, setting in KAFKA_ENV_SETTINGS.items()}
    assert {
        "security.protocol",
        "sasl.mechanism",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
        "ssl.key.password",
    } <= set(got)
    assert kafka_config_from_env({}) == {}


def test_resource_adds_its_secrets_to_the_settings():
    resource = FlowsuiteResource(
        kafka_bootstrap="b:1",
        lake_url="/tmp/l",
        metastore_url="sqlite://",
        warehouse_url="sqlite://",
        kafka_config={k: v for k, v in SECURITY.items() if "password" not in k},
        kafka_sasl_password="pw-passthrough",
        kafka_ssl_key_password="key-pw",
    )
    assert resource.kafka() == SECURITY


def test_librdkafka_accepts_the_passed_through_settings():
    """librdkafka checks every property when a client is built, so building one proves the
    passed-through names and values are ones it accepts; a misspelt name is refused (checked
    below, so the first construction is not vacuous). SASL_PLAINTEXT needs no certificate files."""
    conf = consumer_config(
        "127.0.0.1:1",
        "g",
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "u",
            "sasl.password": "p",
        },
    )
    Consumer(conf).close()
    with pytest.raises(KafkaException, match="sasl.mechanismz"):
        Consumer({**conf, "sasl.mechanismz": "PLAIN"})


def test_settings_hide_kafka_and_aws_secrets_when_printed():
    settings = load_settings({"FLOWSUITE_KAFKA_SASL_PASSWORD": "pw-passthrough", "AWS_SECRET_ACCESS_KEY": "s3cr3t"})
    shown = f"{settings!r} {settings}"
    assert "pw-passthrough" not in shown and "s3cr3t" not in shown
    assert settings.kafka_client_config() == {"sasl.password": "pw-passthrough"}


def test_the_pass_through_names_are_written_once_and_the_docs_list_them():
    # One table (connectors/settings.py); the variable names derive from librdkafka's names.
    import re
    from pathlib import Path

    from connectors.settings import KAFKA_PASS_THROUGH, KAFKA_SECRET_VARS, kafka_env_var

    assert KAFKA_ENV_SETTINGS == {kafka_env_var(s): s for s in KAFKA_PASS_THROUGH}
    assert KAFKA_SECRET_VARS == ("FLOWSUITE_KAFKA_SASL_PASSWORD", "FLOWSUITE_KAFKA_SSL_KEY_PASSWORD")
    every = {var: f"v-{var}" for var in KAFKA_ENV_SETTINGS}
    assert load_settings(every).kafka_client_config() == {s: f"v-{v}" for v, s in KAFKA_ENV_SETTINGS.items()}
    root = Path(__file__).resolve().parents[2]
    for doc in ("README.md", "docs/deploy.md"):
        named = set(re.findall(r"FLOWSUITE_KAFKA_[A-Z_]*[A-Z]", (root / doc).read_text(encoding="utf-8")))
        assert named - {"FLOWSUITE_KAFKA_BOOTSTRAP"} == set(KAFKA_ENV_SETTINGS), doc


def test_every_secret_kafka_setting_is_a_resource_field_read_through_env_var(monkeypatch):
    """The resource derives its secret fields from the one list: each secret pass-through setting
    has its field, is given as dg.EnvVar (never a plain value in kafka_config) and reaches the client."""
    import dagster as dg

    from connectors.settings import KAFKA_PASS_THROUGH, kafka_env_var
    from orchestration.resources import (
        FlowsuiteResource,
        default_flowsuite_resource,
        kafka_secret_field,
    )

    secrets = [s for s, secret in KAFKA_PASS_THROUGH.items() if secret]
    assert secrets and all(kafka_secret_field(s) in FlowsuiteResource.model_fields for s in secrets)
    for s in secrets:
        monkeypatch.setenv(kafka_env_var(s), f"pw-{s}")
    resource = default_flowsuite_resource()
    assert not set(secrets) & set(resource.kafka_config)
    for s in secrets:
        given = getattr(resource, kafka_secret_field(s))
        assert isinstance(given, dg.EnvVar) and given.env_var_name == kafka_env_var(s)
    values = {kafka_secret_field(s): f"pw-{s}" for s in secrets}
    built = FlowsuiteResource(kafka_bootstrap="b", lake_url="/l", metastore_url="sqlite://", warehouse_url="sqlite://", **values)
    assert {s: built.kafka()[s] for s in secrets} == {s: f"pw-{s}" for s in secrets}
