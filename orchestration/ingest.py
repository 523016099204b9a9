"""Run a product's `<P>_ingest` job in process through Dagster and say what happened
(`flowsuite land`; the demo uses it too, but this is no demo code: `flowsuite land` never
imports orchestration/demo/).

`run_ingest` executes `<P>_ingest` against the instance at DAGSTER_HOME (so the run shows in
the UI of `make dev`), or an ephemeral one without it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from connectors.errors import TerminalError
from quality.freshness import PRODUCT_HEALTH

# In-process runs log every step event to the terminal at DEBUG; the CLI prints its own
# summary, and the full event log stays in the run (and the UI).
QUIET_LOGGERS = {"console": {"config": {"log_level": "WARNING"}}}


class IngestError(TerminalError, RuntimeError):
    """The ingest run could not start or failed; the message carries Dagster's failure
    description. Terminal (no such job, a bad spec, a blocked hour), unless `transient`: the
    failure that stopped the run was a transient flowsuite error (a broker away), or the run
    could not start for a reason that passes (no broker answers yet)."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass
class IngestOutcome:
    product: str
    run_id: str
    metadata: dict[str, Any]  # the landed materialization's metadata, as plain values
    duration_s: float
    persistent: bool  # recorded in the DAGSTER_HOME instance (visible in the UI)
    checks: dict[str, bool] = field(default_factory=dict)  # this run's checks, by name
    # The product's status at a glance (quality/freshness.py `product_health`: blocked > late >
    # lagging > fresh) and why: it describes the product, not this run, so it is not counted
    # with the checks (a first landing of old hours is "late" until they are compacted).
    health: str | None = None
    health_reasons: dict[str, list[str]] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


LOCAL_DAGSTER_YAML = """\
# Written by flowsuite for the embedded defaults: local storage under this folder.
# Production uses deploy/dagster.yaml (PostgreSQL storage, queued runs); see docs/deploy.md.
telemetry:
  enabled: false
"""


def ensure_dagster_home(home: str) -> None:
    """A DAGSTER_HOME with a dagster.yaml, so Dagster neither warns nor prints its banner."""
    os.makedirs(home, exist_ok=True)
    config = os.path.join(home, "dagster.yaml")
    if not os.path.exists(config):
        with open(config, "w", encoding="utf-8") as f:
            f.write(LOCAL_DAGSTER_YAML)


def dagster_instance():
    """The instance at DAGSTER_HOME when set (runs show in the UI), else an ephemeral one."""
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if home:
        ensure_dagster_home(home)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def run_ingest(
    product: str,
    partitions: list[int] | None = None,
    max_records: int | None = None,
    instance: Any = None,
) -> IngestOutcome:
    """Execute `<product>_ingest` now (in this process) and return the landed metadata."""
    from orchestration.definitions import defs

    definitions = defs()
    job_name = f"{product}_ingest"
    try:
        job = definitions.resolve_job_def(job_name)
    except Exception:  # noqa: BLE001 - dagster raises a generic error for unknown jobs
        raise IngestError(f"no data product {product!r} (no job {job_name}); see `flowsuite validate`") from None
    config: dict[str, Any] = {}
    if partitions:
        config["partitions"] = partitions
    if max_records is not None:
        config["max_records"] = max_records
    landed_op = f"{product}__landed"
    run_config: dict[str, Any] = {"loggers": QUIET_LOGGERS}
    if config:
        run_config["ops"] = {landed_op: {"config": config}}
    persistent = instance is None and bool(os.environ.get("DAGSTER_HOME"))
    instance = instance or dagster_instance()
    started = time.monotonic()
    result = job.execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False,
        tags={"flowsuite/trigger": "cli"},
    )
    if not result.success:
        failures = [
            _root_cause(e.step_failure_data.error)
            for e in result.all_events
            if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
        ]
        user = [
            e.step_failure_data.user_failure_data
            for e in result.all_events
            if e.is_step_failure and e.step_failure_data and e.step_failure_data.user_failure_data
        ]
        message = next((u.description for u in user if u.description), None) or (
            failures[0] if failures else "see the run's logs")
        # orchestration/failures.py records the kind of the engine error a failed step raised:
        # the run may succeed again only if every step failed with a transient one.
        steps = [e.step_failure_data for e in result.all_events if e.is_step_failure and e.step_failure_data]
        transient = bool(steps) and all(
            d.user_failure_data is not None and _plain((d.user_failure_data.metadata or {}).get("flowsuite/transient")) is True
            for d in steps)
        raise IngestError(f"{job_name} run {result.run_id} failed: {message}", transient=transient)
    mats = result.asset_materializations_for_node(landed_op)
    metadata = {k: _plain(v) for k, v in (mats[-1].metadata if mats else {}).items()}
    evaluations = [e.asset_check_evaluation_data for e in result.all_events
                   if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    checks = {e.check_name: e.passed for e in evaluations if e.check_name != PRODUCT_HEALTH}
    health = next((e for e in evaluations if e.check_name == PRODUCT_HEALTH), None)
    return IngestOutcome(
        product, result.run_id, metadata, time.monotonic() - started, persistent, checks,
        health=_plain(health.metadata["status"]) if health else None,
        health_reasons=_plain(health.metadata["reasons"]) if health else {},
    )


def _root_cause(error: Any) -> str:
    """The innermost error of a step failure: Dagster wraps the real one ("Error occurred while
    executing op …"), and the person at the terminal needs what actually went wrong."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip()


def ingest_summary(outcome: IngestOutcome) -> list[str]:
    m = outcome.metadata
    lines = [
        f"{outcome.product}: consumed {m.get('records_consumed', 0):,}, landed {m.get('records_landed', 0):,}, "
        f"quarantined {m.get('records_quarantined', 0):,} in {m.get('files', 0)} file(s), "
        f"{m.get('bytes', 0):,} bytes, {outcome.duration_s:.1f}s (run {outcome.run_id})"
    ]
    for p, r in sorted((m.get("offset_ranges") or {}).items(), key=lambda kv: int(kv[0])):
        lag = (m.get("lag_per_partition") or {}).get(p)
        extra = f"; skipped: {r['skipped']}" if r.get("skipped") else ""
        lines.append(
            f"  partition {p}: offsets {r['start']:,} → {r['end']:,} ({r['records']:,} records, "
            f"{'reached end' if r['reached_eof'] else 'stopped at the cap'}, lag {lag if lag is not None else '?'}){extra}"
        )
    failed = sorted(name for name, ok in outcome.checks.items() if not ok)
    if outcome.checks:
        lines.append(
            f"  checks: {len(outcome.checks) - len(failed)}/{len(outcome.checks)} passed"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )
    if outcome.health:
        reasons = [r for v in outcome.health_reasons.values() for r in v]
        more = f" (+{len(reasons) - 2} more)" if len(reasons) > 2 else ""
        lines.append(f"  product health: {outcome.health}" + (f": {'; '.join(reasons[:2])}{more}" if reasons else ""))
    return lines
