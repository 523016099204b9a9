"""flowsuite's provider for Apache Airflow 3: wait on an hour, land, compact, sync, replay.

Airflow finds this package through the `apache_airflow_provider` entry point, which names
`get_provider_info` (the provider.yaml of Airflow's own providers, as a dict). Importing the
package imports neither Airflow nor the engine.
"""

from __future__ import annotations

__version__ = "0.1.0"


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
                              "hook-name": "flowsuite"}],
        "asset-uris": [{"schemes": ["flowsuite"], "handler": "flowsuite_airflow.assets.sanitize_uri"}],
    }
