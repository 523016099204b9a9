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
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from connectors.lake import hour_key, parse_hour_key
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec
from orchestration.keys import landed_key
from orchestration.resources import FlowsuiteResource

FRESHNESS = "freshness"
VOLUME = "volume"
RESOURCE_KEY = "flowsuite"


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
