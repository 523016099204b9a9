"""DAGs of the provider's tests (tests/providers/test_airflow_changes.py), not examples.

`flowsuite_test_land_compact`: land clicks, compact its due hours. `flowsuite_test_refusals`:
what must fail at once — a sensor and a land operator (retries=2) on a product that does not exist, a sensor and a compact
operator given a time that is not on the hour — next to the same time with
`truncate_to_hour=True`. FLOWSUITE_TEST_HOUR_AT is that time (inside a landed hour).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG
from flowsuite_airflow.operators.flowsuite import FlowsuiteCompactOperator, FlowsuiteLandOperator
from flowsuite_airflow.sensors.flowsuite import FlowsuiteHourSensor

AT = os.environ.get("FLOWSUITE_TEST_HOUR_AT", "2026-12-07T03:30")

with DAG(dag_id="flowsuite_test_land_compact", schedule=None, start_date=datetime(2026, 11, 1), catchup=False):
    FlowsuiteLandOperator(task_id="land", product="clicks") >> FlowsuiteCompactOperator(task_id="compact",
                                                                                         product="clicks")

with DAG(dag_id="flowsuite_test_refusals", schedule=None, start_date=datetime(2026, 11, 1), catchup=False):
    FlowsuiteHourSensor(task_id="wait_unknown", product="no_such_product", hour=AT, truncate_to_hour=True,
                        poke_interval=1)
    # A terminal engine error (UnknownProductError) through the operators' one mapping: the
    # retries are not used.
    FlowsuiteLandOperator(task_id="land_unknown", product="no_such_product", retries=2,
                          retry_delay=timedelta(seconds=1))
    FlowsuiteHourSensor(task_id="wait_off_hour", product="clicks", hour=AT, poke_interval=1)
    FlowsuiteCompactOperator(task_id="compact_off_hour", product="clicks", hours=AT)
    FlowsuiteHourSensor(task_id="wait_truncated", product="clicks", hour=AT, truncate_to_hour=True, poke_interval=1)
    FlowsuiteCompactOperator(task_id="compact_truncated", product="clicks", hours=[AT], truncate_to_hour=True)
