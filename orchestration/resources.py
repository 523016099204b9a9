"""Dagster resources: thin factories of the connectors/ clients, configured once.

Secrets (SASL passwords, database URLs with passwords, AWS keys) come from the environment
through `dg.EnvVar` and are never logged: the clients' reprs hide them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from connectors.engine import Engine, shared_metastore
from connectors.flows import RunContext
from connectors.lake import Lake, S3Options
from connectors.metastore import Metastore
from connectors.settings import KAFKA_ENV_SETTINGS, KAFKA_PASS_THROUGH, kafka_env_var, load_settings

__all__ = ["KAFKA_ENV_SETTINGS", "FlowsuiteResource", "default_flowsuite_resource", "kafka_config_from_env",
           "kafka_secret_field"]

# The secret pass-through settings (connectors/settings.py's one list): each has a resource field
# of its own, given as dg.EnvVar, so a password never sits in the plain `kafka_config` dict.
KAFKA_SECRET_SETTINGS = tuple(setting for setting, secret in KAFKA_PASS_THROUGH.items() if secret)


def kafka_secret_field(setting: str) -> str:
    """The resource field of a secret Kafka setting (`sasl.password` → `kafka_sasl_password`)."""
    return "kafka_" + setting.replace(".", "_")


def kafka_config_from_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The Kafka pass-through settings (KAFKA_ENV_SETTINGS) of the environment, or of `env`."""
    return load_settings(env).kafka_client_config()


class FlowsuiteResource(dg.ConfigurableResource):
    """Where flowsuite reads and writes: the broker, the lake, the metastore, the warehouse.

    A thin wrapper of `connectors.engine.Engine`, built from these fields. S3 fields left unset
    come from the settings of the process (connectors/settings.py: FLOWSUITE_S3_ENDPOINT,
    AWS_*), read here, at the face, once per resource: the engine itself never reads them."""

    kafka_bootstrap: str
    lake_url: str
    metastore_url: str
    warehouse_url: str
    kafka_config: dict[str, str] = {}  # non-secret client settings (security.protocol, sasl.mechanism, ...)
    kafka_sasl_password: str | None = None  # secret: give as dg.EnvVar
    kafka_ssl_key_password: str | None = None  # secret: give as dg.EnvVar
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None  # secret: give as dg.EnvVar
    products_dir: str | None = None  # default: the settings' (FLOWSUITE_PRODUCTS_DIR)
    iceberg_catalog_url: str | None = None  # default: the metastore's database

    _engine: Engine | None = PrivateAttr(default=None)

    def engine(self) -> Engine:
        """The engine these fields describe (built once per resource instance)."""
        if self._engine is None:
            settings = load_settings()
            env = S3Options.from_settings(settings)
            self._engine = Engine(
                lake_url=self.lake_url, metastore_url=self.metastore_url, warehouse_url=self.warehouse_url,
                kafka_bootstrap=self.kafka_bootstrap,
                products_dir=Path(self.products_dir) if self.products_dir else settings.products_dir,
                kafka_config=self.kafka(),
                s3=S3Options(
                    endpoint_url=self.s3_endpoint_url or env.endpoint_url, region=self.s3_region or env.region,
                    access_key_id=self.aws_access_key_id or env.access_key_id,
                    secret_access_key=self.aws_secret_access_key or env.secret_access_key,
                    session_token=self.aws_session_token or env.session_token,
                ),
                iceberg_catalog_url=self.iceberg_catalog_url or settings.iceberg_catalog_url,
            )
        return self._engine

    def lake(self) -> Lake:
        return self.engine().lake()

    def metastore(self) -> Metastore:
        return shared_metastore(self.metastore_url)

    def run_context(self, run_id: str, is_dead: Callable[[str], bool] | None = None) -> RunContext:
        """What a step's engine calls carry (connectors/flows/context.py): the stores, the broker
        and its client settings, the Dagster run id, and how to tell a failed run's claim."""
        return self.engine().run_context(run_id=run_id, is_dead=is_dead)

    def kafka(self) -> dict[str, Any]:
        """Extra Kafka client settings (security.protocol, sasl.*, ssl.*), passed through."""
        conf = dict(self.kafka_config)
        for setting in KAFKA_SECRET_SETTINGS:
            if value := getattr(self, kafka_secret_field(setting)):
                conf[setting] = value
        return conf


def default_flowsuite_resource() -> FlowsuiteResource:
    """The resource as configured by the environment (DESIGN.md's variables)."""
    settings = load_settings()
    secret = {}  # values read by Dagster from the environment at launch, never stored in config
    if settings.aws_access_key_id:
        secret["aws_access_key_id"] = dg.EnvVar("AWS_ACCESS_KEY_ID")
    if settings.aws_secret_access_key:
        secret["aws_secret_access_key"] = dg.EnvVar("AWS_SECRET_ACCESS_KEY")
    if settings.aws_session_token:
        secret["aws_session_token"] = dg.EnvVar("AWS_SESSION_TOKEN")
    if settings.iceberg_catalog_url:
        secret["iceberg_catalog_url"] = dg.EnvVar("FLOWSUITE_ICEBERG_CATALOG_URL")
    kafka_config: dict[str, Any] = settings.kafka_client_config()
    for setting in KAFKA_SECRET_SETTINGS:
        if kafka_config.pop(setting, None) is not None:
            secret[kafka_secret_field(setting)] = dg.EnvVar(kafka_env_var(setting))
    return FlowsuiteResource(
        kafka_bootstrap=settings.kafka_bootstrap,
        lake_url=settings.lake_url,
        # Set explicitly, the URLs may carry passwords: Dagster reads them at launch (dg.EnvVar).
        metastore_url=dg.EnvVar("FLOWSUITE_METASTORE_URL") if "metastore_url" in settings.model_fields_set else settings.metastore_url,
        warehouse_url=dg.EnvVar("FLOWSUITE_WAREHOUSE_URL") if "warehouse_url" in settings.model_fields_set else settings.warehouse_url,
        kafka_config=kafka_config,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.aws_region,
        products_dir=str(settings.products_dir),
        **secret,
    )
