"""Airflow example: Airflow alone owns `partners` — land it, compact its closed hours, sync it.

Every 10 minutes the land task consumes the topic from the committed offsets, the compact
task rewrites each closed hour that is due (new, reopened by late records, unmarked) and the
sync task brings the warehouse table `partners` (latest version per partner) up to the lake;
each announces what it changed on its asset, `flowsuite://partners/landed`, `.../hourly`,
`.../warehouse` (one event per changed hour, none when nothing changed), so the second DAG
here runs on data, not on time: whenever hours of partners were compacted.

`flowsuite_partners_replay`, triggered by hand, lands the quarantined records that pass once
the spec was fixed. A retry or a second run at once is harmless: the metastore's claims let
one try write each offset range, hour and quarantine file, and a retry takes over the claims
of the try that died.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, task
from flowsuite_airflow.operators.flowsuite import (
    FlowsuiteCompactOperator,
    FlowsuiteLandOperator,
    FlowsuiteReplayQuarantineOperator,
    FlowsuiteSyncOperator,
)

with DAG(
    dag_id="flowsuite_partners",
    schedule=timedelta(minutes=10),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=float(os.environ.get("FLOWSUITE_AIRFLOW_RETRY_DELAY", "30"))),
    },
    tags=["flowsuite", "example"],
):
    land = FlowsuiteLandOperator(
        task_id="land_partners", product="partners",
        batch_size=int(os.environ.get("FLOWSUITE_AIRFLOW_BATCH_SIZE", "10000")),  # records per read
    )
    compact = FlowsuiteCompactOperator(task_id="compact_partners", product="partners")
    sync = FlowsuiteSyncOperator(task_id="sync_partners", product="partners")  # latest row per partner
    land >> [compact, sync]


with DAG(
    dag_id="flowsuite_partners_compacted",
    schedule=[Asset("flowsuite://partners/hourly")],  # data-aware: after each compaction
    start_date=datetime(2026, 11, 1),
    catchup=False,
    tags=["flowsuite", "example"],
):

    @task(inlets=[Asset("flowsuite://partners/hourly")])
    def announce(*, inlet_events=None) -> list[str]:
        events = inlet_events[Asset("flowsuite://partners/hourly")] if inlet_events else []
        # one event per hour compacted to a new generation: {"hour", "generation", "rows", "files"}
        hours = sorted({(e.extra or {})["hour"] for e in events if (e.extra or {}).get("hour")})
        print(f"partners hours compacted: {hours}")
        return hours

    announce()


with DAG(
    dag_id="flowsuite_partners_replay",
    schedule=None,  # by hand, after the spec was fixed to accept what it quarantined
    start_date=datetime(2026, 11, 1),
    catchup=False,
    tags=["flowsuite", "example"],
):
    FlowsuiteReplayQuarantineOperator(task_id="replay_partners_quarantine", product="partners")
