"""flowsuite's provider for Apache Airflow 3: wait on an hour, land, compact, sync, replay.

Airflow finds this package through the `apache_airflow_provider` entry point, which names
`get_provider_info` (the provider.yaml of Airflow's own providers, as a dict). Importing the
package imports neither Airflow nor the engine.
"""

from __future__ import annotations

__version__ = "0.1.0"


# The connection form, as Airflow 3.2+ reads it: declared here (provider.yaml's `conn-fields`
# and `ui-field-behaviour`), not by the hook's deprecated get_ui_field_behaviour /
# get_connection_form_widgets, so the API server shows it without importing the hook. Each
# field is stored in the connection's extra under its own name (what the hook reads).
_TEXT = ["string", "null"]
CONN_FIELDS = {
    "metastore_url": {"label": "Metastore URL", "schema": {"type": _TEXT, "format": "password"},
                      "description": "SQLAlchemy URL of the metastore, e.g. postgresql+psycopg://user:pw@db/flowsuite "
                                     "(default: FLOWSUITE_METASTORE_URL)"},
    "lake_url": {"label": "Lake URL", "schema": {"type": _TEXT},
                 "description": "s3://bucket/prefix or a local folder (default: FLOWSUITE_LAKE_URL)"},
    "warehouse_url": {"label": "Warehouse URL", "schema": {"type": _TEXT, "format": "password"},
                      "description": "SQLAlchemy URL of the warehouse the sync operator writes "
                                     "(default: FLOWSUITE_WAREHOUSE_URL)"},
    "kafka_bootstrap": {"label": "Kafka bootstrap servers", "schema": {"type": _TEXT},
                        "description": "host:port[,host:port] (default: FLOWSUITE_KAFKA_BOOTSTRAP)"},
    "products_dir": {"label": "Data products folder", "schema": {"type": _TEXT},
                     "description": "Folder of the product specs (default: FLOWSUITE_PRODUCTS_DIR)"},
    "kafka": {"label": "librdkafka settings", "schema": {"type": ["object", "null"], "format": "json"},
              "description": 'e.g. {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}'},
}
UI_FIELD_BEHAVIOUR = {
    "hidden-fields": ["host", "port", "schema"],
    "relabeling": {"login": "Kafka SASL username", "password": "Kafka SASL password"},
    "placeholders": {"login": "svc-flowsuite", "metastore_url": "postgresql+psycopg://user:pw@db/flowsuite",
                     "lake_url": "s3://bucket/lake", "kafka_bootstrap": "broker:9092",
                     "products_dir": "/opt/dataproducts"},
}


def get_provider_info() -> dict:
    return {
        "package-name": "flowsuite-provider-airflow",
        "name": "flowsuite",
        "description": "Kafka topics as data products: wait for whole hours of the lake, land, compact, "
                       "sync the warehouse and replay the quarantine from Airflow.",
        "versions": [__version__],
        "integrations": [{"integration-name": "flowsuite", "tags": ["software"]}],
        "hooks": [{"integration-name": "flowsuite", "python-modules": ["flowsuite_airflow.hooks.flowsuite"]}],
        "operators": [{"integration-name": "flowsuite", "python-modules": ["flowsuite_airflow.operators.flowsuite"]}],
        "sensors": [{"integration-name": "flowsuite", "python-modules": ["flowsuite_airflow.sensors.flowsuite"]}],
        "triggers": [{"integration-name": "flowsuite", "python-modules": ["flowsuite_airflow.triggers.flowsuite"]}],
        "connection-types": [{"connection-type": "flowsuite", "hook-class-name": "flowsuite_airflow.hooks.flowsuite.FlowsuiteHook",
                              "hook-name": "flowsuite", "conn-fields": CONN_FIELDS,
                              "ui-field-behaviour": UI_FIELD_BEHAVIOUR}],
        "asset-uris": [{"schemes": ["flowsuite"], "handler": "flowsuite_airflow.assets.sanitize_uri"}],
    }
