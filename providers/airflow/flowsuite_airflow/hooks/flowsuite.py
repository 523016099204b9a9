"""FlowsuiteHook: connection type `flowsuite`, resolved over the FLOWSUITE_* environment.

A connection is optional. Without one (the default id `flowsuite_default` undefined), the
environment decides exactly as for the CLI and Dagster: FLOWSUITE_HOME, FLOWSUITE_METASTORE_URL,
FLOWSUITE_LAKE_URL, FLOWSUITE_WAREHOUSE_URL, FLOWSUITE_KAFKA_BOOTSTRAP, FLOWSUITE_PRODUCTS_DIR,
FLOWSUITE_KAFKA_* (and AWS_* / FLOWSUITE_S3_ENDPOINT for an S3 lake). A connection's extras
override them, field by field:

    AIRFLOW_CONN_FLOWSUITE_DEFAULT='{"conn_type": "flowsuite", "login": "svc", "password": "...",
        "extra": {"metastore_url": "postgresql+psycopg://...", "lake_url": "s3://lake/prod",
                  "kafka_bootstrap": "broker:9092", "kafka": {"security.protocol": "SASL_SSL"}}}'

login / password are the Kafka SASL credentials (Airflow masks the password in logs). The
connection form (get_provider_info's `conn-fields`) has a field for each extra; keys of the
older form's style (`extra__flowsuite__lake_url`) are read too.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from flowsuite_airflow.engine import FlowsuiteConfig


class FlowsuiteHook(BaseHook):
    conn_name_attr = "flowsuite_conn_id"
    default_conn_name = "flowsuite_default"
    conn_type = "flowsuite"
    hook_name = "flowsuite"

    def __init__(self, flowsuite_conn_id: str = default_conn_name, **kwargs: Any):
        super().__init__(**kwargs)
        self.flowsuite_conn_id = flowsuite_conn_id
        self._config: FlowsuiteConfig | None = None

    @staticmethod
    def _apply(conn: Any | None) -> FlowsuiteConfig:
        config = FlowsuiteConfig.from_env()
        if conn is None:
            return config
        extras = {k.removeprefix("extra__flowsuite__"): v for k, v in (conn.extra_dejson or {}).items()}
        if isinstance(extras.get("kafka"), str) and extras["kafka"].strip():  # the form's JSON field, as text
            try:
                extras["kafka"] = json.loads(extras["kafka"])
            except ValueError as exc:
                raise ValueError(f"connection {conn.conn_id}: extra 'kafka' is not a JSON object: {exc}") from None
        return config.with_extras(extras, login=conn.login, password=conn.password)

    def get_conn(self) -> FlowsuiteConfig:
        """The configuration: the connection when it exists, else the environment."""
        if self._config is None:
            try:
                conn = self.get_connection(self.flowsuite_conn_id)
            except AirflowNotFoundException:
                conn = None
            self._config = self._apply(conn)
        return self._config

    async def aget_conn(self) -> FlowsuiteConfig:
        """The same from a trigger's event loop (the triggerer asks its supervisor)."""
        if self._config is None:
            try:
                conn = await self.aget_connection(self.flowsuite_conn_id)
            except AirflowNotFoundException:
                conn = None
            self._config = self._apply(conn)
        return self._config
