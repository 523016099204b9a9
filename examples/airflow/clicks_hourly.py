"""Airflow example: each hour of `clicks`, once it is whole, into the day's partner report.

`FlowsuiteHourSensor` waits — deferred, holding no worker slot — until the run's hour of
clicks is compacted and marked in the metastore (a reopened hour is waited for again; a hour
blocked by a quality gate fails the run with the reason), then returns the hour's files. The
report task reads exactly those files through DuckDB and writes the hour's rows of the day's
report, `$FLOWSUITE_REPORTS_DIR/clicks_daily/<day>.csv` (default `$FLOWSUITE_HOME/reports`):
per hour and partner, impressions, clicks and cost. A rerun replaces its hour's rows, so the
report holds each hour once.

Dagster lands and compacts `clicks` (its owner); this DAG only reads (docs/airflow.md).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task
from flowsuite_airflow.sensors.flowsuite import PREVIOUS_HOUR, FlowsuiteHourSensor


def reports_dir() -> Path:
    home = os.environ.get("FLOWSUITE_HOME") or ".flowsuite"
    return Path(os.environ.get("FLOWSUITE_REPORTS_DIR") or Path(home) / "reports")


with DAG(
    dag_id="flowsuite_clicks_hourly",
    schedule="@hourly",  # the run of [H, H+1) starts after H+1: PREVIOUS_HOUR is H
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=4,
    tags=["flowsuite", "example"],
) as dag:
    wait = FlowsuiteHourSensor(
        task_id="wait_for_clicks_hour", product="clicks", hour=PREVIOUS_HOUR, timeout=6 * 3600,
        poke_interval=float(os.environ.get("FLOWSUITE_AIRFLOW_POKE_INTERVAL", "60")),  # the trigger's poll
    )

    @task
    def report_hour(hour_info: dict) -> str:
        import duckdb

        hour, uris = hour_info["hour"], [f["uri"] for f in hour_info["files"]]
        day = hour[:10]
        out = reports_dir() / "clicks_daily" / f"{day}.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        con.execute(
            "CREATE TABLE hour_rows AS SELECT ? AS hour, partner_id, "
            "count(*) FILTER (WHERE kind = 'impression') AS impressions, "
            "count(*) FILTER (WHERE kind = 'click') AS clicks, sum(cost_micros) AS cost_micros "
            "FROM read_parquet(?) GROUP BY partner_id",
            [hour, uris],
        )
        if out.exists():  # the day so far, without this hour's earlier rows (a rerun)
            con.execute("CREATE TABLE day AS SELECT * FROM read_csv(?, header = true, "
                        "types = {'hour': 'VARCHAR'}) WHERE hour <> ?", [str(out), hour])
        else:
            con.execute("CREATE TABLE day AS SELECT * FROM hour_rows WHERE false")
        tmp = out.with_suffix(".csv.tmp")
        con.execute(f"COPY (SELECT * FROM day UNION ALL BY NAME SELECT * FROM hour_rows ORDER BY hour, partner_id) "
                    f"TO '{tmp}' (HEADER, DELIMITER ',')")
        os.replace(tmp, out)  # readers see the old or the new report, never half of one
        rows = con.execute("SELECT sum(impressions + clicks) FROM hour_rows").fetchone()[0]
        if rows != hour_info["rows"]:
            raise ValueError(f"read {rows} rows of {hour}, the metastore says {hour_info['rows']}")
        print(f"{hour}: {rows} rows of generation {hour_info['generation']} → {out}")
        return str(out)

    report_hour(wait.output)
