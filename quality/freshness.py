"""Freshness and volume: checks on a product over time, not on one batch.

- **freshness** (`quality.freshness`): `max_age` fails when no landing committed for longer
  than that (`Metastore.last_landing_at`); `max_lag` fails when more records wait in the topic
  than that (committed offsets vs the partitions' ends, by `probe_partitions`).
- **volume** (`quality.volume`): the latest *closed* hour (its end plus the allowed lateness
  has passed) must hold between `min_ratio` and `max_ratio` times the median rows of the
  `trailing_hours` closed hours before it (hours without a landing count as 0 rows).

The status functions are plain (no dagster) so tests and the CLI call them directly;
`freshness_and_volume_checks` wraps them as standalone `@dg.asset_check`s on `P/landed`,
run after each landing in the ingest job and on the `<P>_quality_schedule` (every 10 minutes,
stopped by default like every automation),
since a missing landing can only be noticed by looking.

Dagster's own freshness (the UI's "Freshness" state, evaluated by the daemon) comes from
policies derived from the spec and set on the asset specs by `with_freshness_policies`:

- `P/landed`: `FreshnessPolicy.time_window`: warn when the latest landing is older than
  `trigger.max_latency` (the sensor should have run one by then), fail past
  `quality.freshness.max_age` (or `FAIL_AFTER_LATENCIES` x max_latency when the spec has none);
- `P/hourly`: `FreshnessPolicy.cron`: one compaction per hour, by minute
  `hourly_deadline_minute(spec)` (the :05 compaction tick + the allowed lateness + 5 minutes).

Dagster judges a policy on the asset's latest materialization, not per partition, so two
checks say what the policy cannot: `hours_sealed` on `P/hourly` (which closed hours lack their
`_SUCCESS` past the allowed lateness and a compaction period) and `product_health` on
`P/landed` (one status for the product: blocked > late > lagging > fresh, as metadata).
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from connectors.lake import hour_key, parse_hour_key
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec
from orchestration.keys import hourly_key, landed_key
from orchestration.resources import FlowsuiteResource

FRESHNESS = "freshness"
VOLUME = "volume"
HOURS_SEALED = "hours_sealed"
PRODUCT_HEALTH = "product_health"
RESOURCE_KEY = "flowsuite"
# Without quality.freshness.max_age, P/landed fails its policy after this many max_latency.
FAIL_AFTER_LATENCIES = 3
COMPACTION_MINUTE = 5  # orchestration.schedules.CRON: "5 * * * *"
COMPACTION_RUN_GRACE = timedelta(minutes=5)  # a compaction run's usual length
MIN_WINDOW = timedelta(minutes=1)  # Dagster rejects freshness windows below a minute
# product_health's statuses, worst first: the one shown is the worst that applies.
HEALTH_ORDER = ("blocked", "late", "lagging", "fresh")


@dataclass
class Status:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def freshness_status(
    spec: DataProductSpec,
    metastore: Metastore,
    bootstrap: str | None = None,
    kafka_config: dict[str, Any] | None = None,
    now: float | None = None,
) -> Status:
    fresh = spec.quality.freshness
    if fresh is None:
        return Status(True, "no freshness rules")
    now = time.time() if now is None else now
    problems: list[str] = []
    md: dict[str, Any] = {}
    if fresh.max_age is not None:
        last = metastore.last_landing_at(spec.name)
        md["max_age_s"] = fresh.max_age.total_seconds()
        if last is None:
            problems.append("the product has never landed")
        else:
            age = now - last
            md["last_landing_at"] = datetime.fromtimestamp(last, UTC).isoformat()
            md["age_s"] = round(age, 1)
            if age > fresh.max_age.total_seconds():
                problems.append(f"last landing {age:.0f}s ago, above max_age {fresh.max_age.total_seconds():.0f}s")
    if fresh.max_lag is not None:
        from connectors.kafka import consumer_config, probe_partitions, topic_partitions

        if bootstrap is None:
            raise ValueError("max_lag needs the broker's bootstrap servers")
        partitions = topic_partitions(bootstrap, spec.topic, kafka_config)
        committed = metastore.committed_offsets(spec.name)
        start = {p: committed[p].next_offset if p in committed else 0 for p in partitions}
        probes = probe_partitions(consumer_config(bootstrap, spec.consumer_group, kafka_config), spec.topic, start)
        waiting = {p: pr.waiting for p, pr in probes.items()}
        lag = sum(waiting.values())
        md["max_lag"] = fresh.max_lag
        md["lag"] = lag
        md["lag_per_partition"] = {str(p): n for p, n in sorted(waiting.items())}
        oldest = [pr.oldest_waiting_ms for pr in probes.values() if pr.oldest_waiting_ms and pr.oldest_waiting_ms > 0]
        if oldest:
            md["oldest_waiting_age_s"] = round(now - min(oldest) / 1000, 1)
        if lag > fresh.max_lag:
            problems.append(f"{lag} records wait in {spec.topic}, above max_lag {fresh.max_lag}")
    if problems:
        return Status(False, "; ".join(problems), md)
    return Status(True, "fresh", md)


def volume_status(spec: DataProductSpec, metastore: Metastore, now: datetime | None = None) -> Status:
    vol = spec.quality.volume
    if vol is None:
        return Status(True, "no volume rules")
    now = now or datetime.now(UTC)
    lateness = spec.partitioning.allowed_lateness
    # The latest hour whose end plus allowed lateness has passed.
    latest = (now - lateness - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    rows = {h.hour: h.landed_rows for h in metastore.hours(spec.name)}
    if not rows:
        return Status(True, "nothing landed yet", {"hour": hour_key(latest)})
    first = min(parse_hour_key(h) for h in rows)
    trailing = [latest - timedelta(hours=i) for i in range(1, vol.trailing_hours + 1)]
    trailing = [h for h in trailing if h >= first]
    latest_rows = rows.get(hour_key(latest), 0)
    md: dict[str, Any] = {
        "hour": hour_key(latest),
        "rows": latest_rows,
        "trailing_hours": len(trailing),
        "min_ratio": vol.min_ratio,
        "max_ratio": vol.max_ratio,
    }
    if not trailing:
        return Status(True, f"no trailing hours before {hour_key(latest)} to compare with", md)
    median = statistics.median(rows.get(hour_key(h), 0) for h in trailing)
    md["trailing_median"] = float(median)
    if median == 0:
        return Status(True, "the trailing hours' median is 0 rows: nothing to compare with", md)
    ratio = latest_rows / median
    md["ratio"] = round(ratio, 4)
    if ratio < vol.min_ratio:
        return Status(False, f"hour {hour_key(latest)} has {latest_rows} rows, {ratio:.2f}x the trailing median {median:g} (min_ratio {vol.min_ratio})", md)
    if ratio > vol.max_ratio:
        return Status(False, f"hour {hour_key(latest)} has {latest_rows} rows, {ratio:.2f}x the trailing median {median:g} (max_ratio {vol.max_ratio})", md)
    return Status(True, f"hour {hour_key(latest)}: {ratio:.2f}x the trailing median", md)


def _metadata(md: dict[str, Any]) -> dict[str, Any]:
    return {k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v for k, v in md.items()}


def freshness_and_volume_checks(spec: DataProductSpec) -> list[dg.AssetChecksDefinition]:
    """Standalone checks on `P/landed` for the product's freshness and volume rules."""
    key = landed_key(spec)
    checks: list[dg.AssetChecksDefinition] = []
    if spec.quality.freshness is not None:
        fresh = spec.quality.freshness
        rules = []
        if fresh.max_age is not None:
            rules.append(f"a landing at most {fresh.max_age} ago")
        if fresh.max_lag is not None:
            rules.append(f"at most {fresh.max_lag} records waiting in the topic")

        @dg.asset_check(
            asset=key,
            name=FRESHNESS,
            description=f"{spec.name} is fresh: {' and '.join(rules) or 'no rule'}.",
            blocking=False,
        )
        def freshness_check(flowsuite: FlowsuiteResource) -> dg.AssetCheckResult:
            status = freshness_status(spec, flowsuite.metastore(), flowsuite.kafka_bootstrap, flowsuite.kafka())
            return dg.AssetCheckResult(
                passed=status.passed, severity=dg.AssetCheckSeverity.ERROR,
                description=status.description, metadata=_metadata(status.metadata),
            )

        checks.append(freshness_check)
    if spec.quality.volume is not None:
        vol = spec.quality.volume

        @dg.asset_check(
            asset=key,
            name=VOLUME,
            description=(
                f"The latest closed hour of {spec.name} holds {vol.min_ratio}x to {vol.max_ratio}x the median "
                f"rows of the {vol.trailing_hours} hours before it."
            ),
            blocking=False,
        )
        def volume_check(flowsuite: FlowsuiteResource) -> dg.AssetCheckResult:
            status = volume_status(spec, flowsuite.metastore())
            return dg.AssetCheckResult(
                passed=status.passed, severity=dg.AssetCheckSeverity.WARN,
                description=status.description, metadata=_metadata(status.metadata),
            )

        checks.append(volume_check)
    return checks


# --- Dagster freshness policies, derived from the spec --------------------------------------


def landed_freshness_policy(spec: DataProductSpec) -> dg.FreshnessPolicy:
    """Warn past trigger.max_latency, fail past quality.freshness.max_age."""
    warn = max(spec.trigger.max_latency, MIN_WINDOW)
    fresh = spec.quality.freshness
    fail = fresh.max_age if fresh is not None and fresh.max_age is not None else FAIL_AFTER_LATENCIES * warn
    fail = max(fail, MIN_WINDOW)
    return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn if warn < fail else None)


def hourly_deadline_minute(spec: DataProductSpec) -> int:
    """The minute of each hour by which that hour's compaction should have run."""
    minutes = (timedelta(minutes=COMPACTION_MINUTE) + spec.partitioning.allowed_lateness
               + COMPACTION_RUN_GRACE).total_seconds() / 60
    return min(59, int(minutes))


def hourly_freshness_policy(spec: DataProductSpec) -> dg.FreshnessPolicy:
    """One compaction per hour, by `hourly_deadline_minute` (cron, UTC)."""
    return dg.FreshnessPolicy.cron(
        deadline_cron=f"{hourly_deadline_minute(spec)} * * * *", lower_bound_delta=timedelta(hours=1), timezone="UTC",
    )


def with_freshness_policies(spec: DataProductSpec, defs: dg.Definitions) -> dg.Definitions:
    """The product's definitions with Dagster freshness policies on P/landed and P/hourly."""
    landed, hourly = landed_key(spec), hourly_key(spec)
    policies = {landed: landed_freshness_policy(spec), hourly: hourly_freshness_policy(spec)}
    with warnings.catch_warnings():  # map_asset_specs is marked preview in Dagster 1.13; its behaviour is what we need
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return defs.map_asset_specs(
            func=lambda s: s.replace_attributes(freshness_policy=policies[s.key]) if s.key in policies else s,
        )


# --- per-hour and per-product status ----------------------------------------------------------


def unsealed_hours(spec: DataProductSpec, metastore: Metastore, lake: Any, now: datetime | None = None) -> dict[str, str]:
    """Hour → why, for each landed hour that should be sealed by now and has no `_SUCCESS`.

    An hour should be sealed once its end + allowed lateness has passed and the next compaction
    tick after that (within an hour) has had COMPACTION_RUN_GRACE to run."""
    from connectors.lake import SUCCESS, hour_dir

    now = now or datetime.now(UTC)
    due_by = spec.partitioning.allowed_lateness + timedelta(hours=1) + COMPACTION_RUN_GRACE
    late: dict[str, str] = {}
    for rec in metastore.hours(spec.name):
        if rec.landed_rows <= 0:
            continue
        end = parse_hour_key(rec.hour) + timedelta(hours=1)
        if now < end + due_by:
            continue
        if lake.exists(f"{hour_dir(spec.name, rec.hour)}/{SUCCESS}"):
            continue
        why = rec.blocked_reason and "blocked by a failed quality check"
        why = why or ("reopened by late data" if rec.state == "reopened" else f"not compacted ({rec.state})")
        late[rec.hour] = f"{why}; due by {(end + due_by).isoformat()}"
    return late


def hours_sealed_status(spec: DataProductSpec, metastore: Metastore, lake: Any, now: datetime | None = None) -> Status:
    late = unsealed_hours(spec, metastore, lake, now)
    md: dict[str, Any] = {"unsealed_hours": sorted(late), "reasons": late,
                          "allowed_lateness_s": spec.partitioning.allowed_lateness.total_seconds()}
    if late:
        return Status(False, f"{len(late)} hour(s) past their lateness without _SUCCESS: {', '.join(sorted(late)[:5])}", md)
    return Status(True, "every closed hour is sealed", md)


@dataclass
class Health:
    status: str  # one of HEALTH_ORDER
    reasons: dict[str, list[str]]  # status → why, for every status that applies


def product_health(spec: DataProductSpec, flowsuite: FlowsuiteResource, now: datetime | None = None) -> Health:
    """One status for the product: blocked > late > lagging > fresh."""
    from quality.checks import blocked_hours

    now = now or datetime.now(UTC)
    metastore = flowsuite.metastore()
    reasons: dict[str, list[str]] = {s: [] for s in HEALTH_ORDER}
    reasons["blocked"] = [f"hour {h}: {why}" for h, why in sorted(blocked_hours(metastore, spec.name).items())]
    last = metastore.last_landing_at(spec.name)
    fail_after = landed_freshness_policy(spec)
    fail_s = fail_after.fail_window.to_timedelta().total_seconds()
    if last is None:
        reasons["late"].append("the product has never landed")
    elif now.timestamp() - last > fail_s:
        reasons["late"].append(f"last landing {now.timestamp() - last:.0f}s ago, above {fail_s:.0f}s")
    reasons["late"] += [f"hour {h}: {why}" for h, why in sorted(unsealed_hours(spec, metastore, flowsuite.lake(), now).items())]
    if spec.flow.enabled:
        from connectors.gateway.health import product_health as subscriptions_health
        from connectors.gateway.store import GatewayStore

        try:
            health = subscriptions_health(GatewayStore(metastore), spec, flowsuite.kafka_bootstrap, flowsuite.kafka())
            reasons["lagging"] = [p for h in health for p in h.problems()]
        except Exception as exc:  # noqa: BLE001 - an unreachable broker is itself worth seeing
            reasons["lagging"] = [f"subscriptions' lag unknown: {type(exc).__name__}: {exc}"]
    status = next((s for s in HEALTH_ORDER[:-1] if reasons[s]), "fresh")
    return Health(status, {k: v for k, v in reasons.items() if v})


def health_checks(spec: DataProductSpec) -> list[dg.AssetChecksDefinition]:
    """`hours_sealed` on P/hourly and `product_health` on P/landed."""
    hourly = hourly_key(spec)
    landed = landed_key(spec)

    @dg.asset_check(
        asset=hourly, name=HOURS_SEALED, blocking=False,
        description=(f"Every landed hour of {spec.name} has its _SUCCESS once its end + allowed lateness "
                     f"({spec.partitioning.allowed_lateness}) and one compaction period have passed."),
    )
    def hours_sealed_check(flowsuite: FlowsuiteResource) -> dg.AssetCheckResult:
        status = hours_sealed_status(spec, flowsuite.metastore(), flowsuite.lake())
        return dg.AssetCheckResult(passed=status.passed, severity=dg.AssetCheckSeverity.ERROR,
                                   description=status.description, metadata=_metadata(status.metadata))

    @dg.asset_check(
        asset=landed, name=PRODUCT_HEALTH, blocking=False,
        description=(f"{spec.name} at a glance: blocked (a failed blocking check) > late (no landing or an "
                     "unsealed hour) > lagging (a subscription behind) > fresh; the status is in the metadata."),
    )
    def product_health_check(flowsuite: FlowsuiteResource) -> dg.AssetCheckResult:
        health = product_health(spec, flowsuite)
        return dg.AssetCheckResult(
            passed=health.status == "fresh",
            severity=dg.AssetCheckSeverity.WARN if health.status == "lagging" else dg.AssetCheckSeverity.ERROR,
            description=f"{health.status}: " + "; ".join(r for v in health.reasons.values() for r in v[:3]) if health.reasons else "fresh",
            metadata={"status": dg.MetadataValue.text(health.status), "reasons": dg.MetadataValue.json(health.reasons)},
        )

    return [hours_sealed_check, product_health_check]
