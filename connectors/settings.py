"""Every setting flowsuite takes from the environment, read in this one place (names in README's
Configuration table and DESIGN.md).

`load_settings()` reads the process environment; `load_settings(env)` reads only the mapping
given (tests, subprocess environments). The engine never reads these variables itself: a face
builds one `connectors.engine.Engine` from the settings and hands it down (the CLI directly, the
Dagster side through resources.py, where the secrets still reach the resource only as
`dg.EnvVar`, the Airflow provider through its connection). Secrets are `SecretStr`, so a printed
or logged settings object shows `**********`.

Two reads of the environment stay outside this module, on purpose: `${VAR}` in a source's
connection URL (connectors/sources/common.py: the spec names the variable that holds the
secret, so the URL's password never sits in YAML; callers may pass their own mapping) and the
crash tests' hook FLOWSUITE_CRASH_AT (connectors/faults.py, read at each crash point so a test
sets it for one subprocess only; never set in production).

New settings go here as a field with its variable name as alias (`validation_alias`), a
default, and a one-line comment; derived defaults are filled in `_defaults`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"

# The Kafka client settings that pass through from the environment unchanged, written once:
# librdkafka's name → whether it is a secret. Each one's variable is FLOWSUITE_KAFKA_ and the
# name upper-cased with dots as underscores (sasl.password → FLOWSUITE_KAFKA_SASL_PASSWORD);
# the settings, the Dagster resource, the Airflow provider and the CLI all derive from it, and
# tests/security/test_kafka_settings.py checks that README and docs/deploy.md list exactly these.
KAFKA_PASS_THROUGH: dict[str, bool] = {
    "security.protocol": False,
    "sasl.mechanism": False,
    "sasl.username": False,
    "sasl.password": True,
    "ssl.ca.location": False,
    "ssl.certificate.location": False,
    "ssl.key.location": False,
    "ssl.key.password": True,
}


def kafka_env_var(setting: str) -> str:
    """The environment variable of a pass-through Kafka setting (`sasl.mechanism` →
    `FLOWSUITE_KAFKA_SASL_MECHANISM`)."""
    return "FLOWSUITE_KAFKA_" + setting.upper().replace(".", "_")


KAFKA_ENV_SETTINGS = {kafka_env_var(setting): setting for setting in KAFKA_PASS_THROUGH}  # variable → setting
KAFKA_SECRET_VARS = tuple(kafka_env_var(setting) for setting, secret in KAFKA_PASS_THROUGH.items() if secret)


def _env(*names: str):
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Where flowsuite keeps things and how it reaches them. Empty variables count as unset."""

    model_config = SettingsConfigDict(case_sensitive=True, frozen=True, extra="ignore", validate_default=False)

    # --- where things are (README "Configuration") ---
    home: Path = Field(default=None, validation_alias="FLOWSUITE_HOME")
    kafka_bootstrap: str = Field(DEFAULT_KAFKA_BOOTSTRAP, validation_alias="FLOWSUITE_KAFKA_BOOTSTRAP")
    lake_url: str = Field(default=None, validation_alias="FLOWSUITE_LAKE_URL")
    metastore_url: str = Field(default=None, repr=False, validation_alias="FLOWSUITE_METASTORE_URL")
    warehouse_url: str = Field(default=None, repr=False, validation_alias="FLOWSUITE_WAREHOUSE_URL")
    products_dir: Path = Field(default=None, validation_alias="FLOWSUITE_PRODUCTS_DIR")
    # the Iceberg catalog's database (connectors/tables); unset: the metastore's database
    iceberg_catalog_url: str | None = Field(None, repr=False, validation_alias="FLOWSUITE_ICEBERG_CATALOG_URL")
    # --- the embedded broker ---
    broker_storage: str | None = Field(None, validation_alias="FLOWSUITE_BROKER_STORAGE")
    # --- Kafka client pass-through (security.protocol, sasl.*, ssl.*): the set variables of
    # KAFKA_ENV_SETTINGS by librdkafka name, each value a SecretStr (two are secrets; one type
    # keeps a printed Settings from showing any of them) ---
    kafka_pass_through: dict[str, SecretStr] = Field(default_factory=dict, repr=False)
    # --- S3 lake (and the broker's S3 storage) ---
    s3_endpoint_url: str | None = Field(
        None, validation_alias=_env("FLOWSUITE_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    )
    aws_region: str | None = Field(None, validation_alias=_env("AWS_REGION", "AWS_DEFAULT_REGION"))
    aws_access_key_id: str | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(None, validation_alias="AWS_SECRET_ACCESS_KEY")
    aws_session_token: SecretStr | None = Field(None, validation_alias="AWS_SESSION_TOKEN")
    # --- the flow gateway (connectors/gateway, docs/flow.md) ---
    flow_origin: str = Field("flowsuite.local", validation_alias="FLOWSUITE_FLOW_ORIGIN")  # WebHook-Request-Origin
    flow_allow_http: bool = Field(False, validation_alias="FLOWSUITE_FLOW_ALLOW_HTTP")  # http:// sinks (tests, demo)
    flow_allow_sinks: str = Field("", validation_alias="FLOWSUITE_FLOW_ALLOW_SINKS")  # CIDRs allowed although not global
    flow_lease_s: float = Field(2.0, validation_alias="FLOWSUITE_FLOW_LEASE_S")  # lease of a (subscription, partition) claim, renewed every lease/4
    flow_retry_cap_s: float = Field(300.0, validation_alias="FLOWSUITE_FLOW_RETRY_CAP_S")  # longest pause between attempts
    flow_ttl_s: float = Field(86_400.0, validation_alias="FLOWSUITE_FLOW_TTL_S")  # retried this long, then the dead letter
    flow_public_url: str | None = Field(None, validation_alias="FLOWSUITE_FLOW_PUBLIC_URL")  # the registry's root URL
    # --- Schema Registry of format: avro|protobuf products (docs/formats.md), passed through to
    # confluent-kafka's SchemaRegistryClient as SCHEMA_REGISTRY_ENV_SETTINGS names them ---
    schema_registry_url: str | None = Field(None, repr=False, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_URL")
    schema_registry_basic_auth_user_info: SecretStr | None = Field(
        None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO")
    schema_registry_bearer_auth_credentials_source: str | None = Field(
        None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_BEARER_AUTH_CREDENTIALS_SOURCE")
    schema_registry_bearer_auth_token: SecretStr | None = Field(
        None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_BEARER_AUTH_TOKEN")
    schema_registry_bearer_auth_logical_cluster: str | None = Field(
        None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_BEARER_AUTH_LOGICAL_CLUSTER")
    schema_registry_bearer_auth_identity_pool_id: str | None = Field(
        None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_BEARER_AUTH_IDENTITY_POOL_ID")
    schema_registry_ssl_ca_location: str | None = Field(None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_SSL_CA_LOCATION")
    schema_registry_ssl_certificate_location: str | None = Field(
        None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION")
    schema_registry_ssl_key_location: str | None = Field(None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_SSL_KEY_LOCATION")
    schema_registry_ssl_key_password: SecretStr | None = Field(
        None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_SSL_KEY_PASSWORD")
    schema_registry_proxy: str | None = Field(None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_PROXY")
    schema_registry_timeout: int | None = Field(None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_TIMEOUT")
    schema_registry_max_retries: int | None = Field(None, validation_alias="FLOWSUITE_SCHEMA_REGISTRY_MAX_RETRIES")
    # --- fault injection of the crash tests (connectors/faults.py reads it at each crash point) ---
    crash_at: str | None = Field(None, validation_alias="FLOWSUITE_CRASH_AT")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # Only the mapping given: load_settings() passes os.environ itself, load_settings(env) a
        # mapping that must not be topped up from the process environment.
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data):
        if isinstance(data, Mapping):
            data = {k: v for k, v in data.items() if v not in ("", None)}
            passed = {setting: data.pop(var) for var, setting in KAFKA_ENV_SETTINGS.items() if var in data}
            if passed:
                data["kafka_pass_through"] = {**data.get("kafka_pass_through", {}), **passed}
        return data

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        home = Path(self.home or REPO_ROOT / ".flowsuite").resolve()
        products_dir = Path(self.products_dir or REPO_ROOT / "dataproducts")
        if not products_dir.is_absolute():
            products_dir = (REPO_ROOT / products_dir).resolve()
        fill = {
            "home": home,
            "products_dir": products_dir,
            "lake_url": self.lake_url or str(home / "lake"),
            "metastore_url": self.metastore_url or f"sqlite:///{home / 'metastore.db'}",
            "warehouse_url": self.warehouse_url or f"sqlite:///{home / 'warehouse.db'}",
        }
        for name, value in fill.items():
            object.__setattr__(self, name, value)  # frozen: the defaults are filled once, here
        return self

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def kafka_client_config(self) -> dict[str, str]:
        """The Kafka pass-through settings as librdkafka names (secrets included: pass them
        only to a client, never to a log)."""
        return {setting: value.get_secret_value() for setting, value in self.kafka_pass_through.items()}

    def schema_registry_config(self) -> dict:
        """SchemaRegistryClient settings (secrets included: pass them only to the client)."""
        values = {
            "url": self.schema_registry_url,
            "basic.auth.user.info": _reveal(self.schema_registry_basic_auth_user_info),
            "bearer.auth.credentials.source": self.schema_registry_bearer_auth_credentials_source,
            "bearer.auth.token": _reveal(self.schema_registry_bearer_auth_token),
            "bearer.auth.logical.cluster": self.schema_registry_bearer_auth_logical_cluster,
            "bearer.auth.identity.pool.id": self.schema_registry_bearer_auth_identity_pool_id,
            "ssl.ca.location": self.schema_registry_ssl_ca_location,
            "ssl.certificate.location": self.schema_registry_ssl_certificate_location,
            "ssl.key.location": self.schema_registry_ssl_key_location,
            "ssl.key.password": _reveal(self.schema_registry_ssl_key_password),
            "proxy": self.schema_registry_proxy,
            "timeout": self.schema_registry_timeout,
            "max.retries": self.schema_registry_max_retries,
        }
        return {k: v for k, v in values.items() if v is not None}


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The settings of this process's environment, or of exactly the mapping `env`."""
    return Settings.model_validate(dict(os.environ if env is None else env))
