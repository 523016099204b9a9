"""Dagster resources: thin factories of the connectors/ clients, configured once.

Secrets (SASL passwords, database URLs with passwords, AWS keys) come from the environment
through `dg.EnvVar` and are never logged: the clients' reprs hide them.
"""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from connectors.lake import Lake, S3Options
from connectors.metastore import Metastore
from connectors.settings import KAFKA_ENV_SETTINGS, load_settings

__all__ = ["KAFKA_ENV_SETTINGS", "FlowsuiteResource", "default_flowsuite_resource", "kafka_config_from_env"]

def kafka_config_from_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The Kafka pass-through settings (KAFKA_ENV_SETTINGS) of the environment, or of `env`."""
    return load_settings(env).kafka_client_config()


_METASTORES: dict[str, Metastore] = {}
_METASTORES_LOCK = threading.Lock()


def _metastore(url: str) -> Metastore:
    # One engine (and connection pool) per process and URL, shared by steps and sensors;
    # the lock keeps threads that ask at once (concurrent sensor ticks) from opening several.
    # Opening may wait for another process's schema change; an open one is returned at once.
    store = _METASTORES.get(url)
    if store is not None:
        return store
    with _METASTORES_LOCK:
        if url not in _METASTORES:
            _METASTORES[url] = Metastore(url)
        return _METASTORES[url]


class FlowsuiteResource(dg.ConfigurableResource):
    """Where flowsuite reads and writes: the broker, the lake, the metastore, the warehouse."""

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

    _lake: Lake | None = PrivateAttr(default=None)

    def lake(self) -> Lake:
        if self._lake is None:
            s3 = S3Options.from_env()
            s3 = S3Options(
                endpoint_url=self.s3_endpoint_url or s3.endpoint_url,
                region=self.s3_region or s3.region,
                access_key_id=self.aws_access_key_id or s3.access_key_id,
                secret_access_key=self.aws_secret_access_key or s3.secret_access_key,
                session_token=s3.session_token,
            )
            self._lake = Lake(self.lake_url, s3)
        return self._lake

    def metastore(self) -> Metastore:
        return _metastore(self.metastore_url)

    def kafka(self) -> dict[str, Any]:
        """Extra Kafka client settings (security.protocol, sasl.*, ssl.*), passed through."""
        conf = dict(self.kafka_config)
        if self.kafka_sasl_password:
            conf["sasl.password"] = self.kafka_sasl_password
        if self.kafka_ssl_key_password:
            conf["ssl.key.password"] = self.kafka_ssl_key_password
        return conf


def default_flowsuite_resource() -> FlowsuiteResource:
    """The resource as configured by the environment (DESIGN.md's variables)."""
    settings = load_settings()
    secret = {}  # values read by Dagster from the environment at launch, never stored in config
    if settings.aws_access_key_id:
        secret["aws_access_key_id"] = dg.EnvVar("AWS_ACCESS_KEY_ID")
    if settings.aws_secret_access_key:
        secret["aws_secret_access_key"] = dg.EnvVar("AWS_SECRET_ACCESS_KEY")
    kafka_config: dict[str, Any] = settings.kafka_client_config()
    for var, setting in (("FLOWSUITE_KAFKA_SASL_PASSWORD", "sasl.password"), ("FLOWSUITE_KAFKA_SSL_KEY_PASSWORD", "ssl.key.password")):
        if kafka_config.pop(setting, None) is not None:
            secret["kafka_" + setting.replace(".", "_")] = dg.EnvVar(var)
    return FlowsuiteResource(
        kafka_bootstrap=settings.kafka_bootstrap,
        lake_url=settings.lake_url,
        # Set explicitly, the URLs may carry passwords: Dagster reads them at launch (dg.EnvVar).
        metastore_url=dg.EnvVar("FLOWSUITE_METASTORE_URL") if "metastore_url" in settings.model_fields_set else settings.metastore_url,
        warehouse_url=dg.EnvVar("FLOWSUITE_WAREHOUSE_URL") if "warehouse_url" in settings.model_fields_set else settings.warehouse_url,
        kafka_config=kafka_config,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.aws_region,
        **secret,
    )
