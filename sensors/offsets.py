"""The offset sensor of each data product: request a landing when enough records wait.

Each tick compares the committed offsets (the metastore's: the truth) with the broker's end
offsets (`connectors.kafka.probe_waiting`: one fetch from the committed offset of every
partition at once on a consumer made for the tick, which gives each partition's exact end and
the timestamp of its oldest waiting record; no ListOffsets). A run of `<P>_ingest` is
requested when at least `trigger.min_records` records wait or the oldest has waited longer
than `trigger.max_latency`, and never while one is queued or running.

Run keys are deterministic — the product and its start offsets (`clicks:0:1200,1:800`) — so a
tick evaluated twice requests one run. When a run with that key already ended without moving
the offsets (it failed), the next request gets `:retry<n>`, n kept in the cursor. The cursor is
JSON and only a hint: the run itself lands from the committed offsets.

A committed offset beyond the partition's end (the topic lost its history: a memory broker
restarted, the topic recreated) fails the tick with HistoryLostError, never a silent skip.
"""

# No `from __future__ import annotations`: Dagster inspects the sensor function's signature.

import json
import time
from typing import Any

import dagster as dg

from connectors.kafka import TopicUnavailableError, consumer_config, probe_waiting
from connectors.spec import DataProductSpec
from orchestration.resources import FlowsuiteResource

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RUN_KEY_TAG = "dagster/run_key"  # set by Dagster on runs a sensor requested
START_OFFSETS_TAG = "flowsuite/start_offsets"


def offset_run_key(product: str, starts: dict[int, int], retry: int = 0) -> str:
    """`clicks:0:1200,1:800` (+ `:retry<n>`): one key per range of start offsets."""
    key = f"{product}:" + ",".join(f"{p}:{o}" for p, o in sorted(starts.items()))
    return f"{key}:retry{retry}" if retry else key


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _read_cursor(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        cursor = json.loads(text)
    except ValueError:
        return {}  # a hint only: a garbled cursor costs at most one retry counter
    return cursor if isinstance(cursor, dict) else {}


def evaluate_offsets(
    spec: DataProductSpec,
    job_name: str,
    context: dg.SensorEvaluationContext,
    flowsuite: Any,
) -> dg.SensorResult | dg.SkipReason:
    """One tick of `<P>_offsets` (a plain function, so the CLI and tests can call it)."""
    cursor = _read_cursor(context.cursor)
    in_flight = context.instance.get_run_records(
        dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1
    )
    if in_flight:
        return dg.SkipReason(f"a landing run is in progress: {in_flight[0].dagster_run.run_id}")

    states = flowsuite.metastore().committed_offsets(spec.name)
    conf = consumer_config(flowsuite.kafka_bootstrap, spec.consumer_group, flowsuite.kafka())
    try:
        found = probe_waiting(conf, spec.topic, states)
    except TopicUnavailableError as exc:
        return dg.SkipReason(str(exc))
    committed, waiting, unmeasured = found.committed, found.records, found.unmeasured
    waiting_partitions = found.partitions
    oldest_age_s = found.oldest_age_s()
    min_records = spec.trigger.min_records
    max_latency_s = spec.trigger.max_latency.total_seconds()
    tick = {"at": time.time(), "waiting": waiting, "oldest_age_s": oldest_age_s, "committed": committed}

    if not waiting_partitions:
        cursor["last_tick"] = tick
        return dg.SensorResult(skip_reason=f"no records waiting in {spec.topic}", cursor=json.dumps(cursor))
    due_by_count = waiting >= min_records
    due_by_age = oldest_age_s is not None and oldest_age_s >= max_latency_s
    if not (due_by_count or due_by_age or unmeasured):
        cursor["last_tick"] = tick
        return dg.SensorResult(
            skip_reason=(
                f"{waiting} records waiting (< min_records {min_records}), oldest "
                f"{_duration(oldest_age_s)} (< max_latency {_duration(max_latency_s)})"
            ),
            cursor=json.dumps(cursor),
        )

    base_key = offset_run_key(spec.name, committed)
    retry = int(cursor.get("retries", {}).get(base_key, 0))
    key = offset_run_key(spec.name, committed, retry)
    if _ended(context.instance, key):
        # A run from these very offsets ended and the offsets did not move: it failed or was
        # skipped. Dagster drops a repeated run key, so the retry gets a key of its own.
        retry += 1
        key = offset_run_key(spec.name, committed, retry)
    why = (
        f"{waiting} records waiting (>= min_records {min_records})"
        if due_by_count
        else f"oldest waiting record is {_duration(oldest_age_s)} old (>= max_latency {_duration(max_latency_s)})"
        if due_by_age
        else f"the last landing of partition(s) {unmeasured} stopped before the end of the partition"
    )
    new_cursor = {
        "last_key": key,
        "starts": {str(p): o for p, o in committed.items()},
        "retries": {base_key: retry} if retry else {},
        "last_tick": tick,
    }
    request = dg.RunRequest(
        run_key=key,
        tags={
            START_OFFSETS_TAG: json.dumps({str(p): o for p, o in committed.items()}),
            "flowsuite/product": spec.name,
            "flowsuite/trigger": why,
        },
    )
    context.log.info(f"{spec.name}: requesting {key}: {why}")
    return dg.SensorResult(run_requests=[request], cursor=json.dumps(new_cursor))


def _ended(instance: dg.DagsterInstance, run_key: str) -> bool:
    """Whether a run with this run key exists and has finished."""
    records = instance.get_run_records(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
    return bool(records) and records[0].dagster_run.is_finished


def build_offset_sensor(spec: DataProductSpec, job: Any) -> dg.SensorDefinition:
    """`<P>_offsets`: request `<P>_ingest` when records wait (stopped until turned on)."""

    @dg.sensor(
        name=f"{spec.name}_offsets",
        job=job,
        minimum_interval_seconds=max(1, int(spec.trigger.sensor_interval.total_seconds())),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Requests {job.name} when at least {spec.trigger.min_records} records of topic "
            f"{spec.topic} wait beyond the committed offsets, or the oldest has waited "
            f"{_duration(spec.trigger.max_latency.total_seconds())}."
        ),
    )
    def offsets_sensor(context: dg.SensorEvaluationContext, flowsuite: FlowsuiteResource):
        return evaluate_offsets(spec, job.name, context, flowsuite)

    return offsets_sensor
