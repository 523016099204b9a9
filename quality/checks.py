"""Dagster asset checks of a data product's landing: its GX suite, run on every landed batch.

The landing asset `P/landed` declares `landing_check_specs(spec)` in its `check_specs` and,
after the landing committed, yields `landing_check_results(spec, table, result, metastore)`:

- one check per expectation (named by `quality.expectations.check_names`), `blocking=True`
  for severity `error`: a failed `error` check fails the landing step *after* its
  materialization is recorded, so nothing downstream of it in the same run executes (the
  warehouse sync), and the hours this run touched are blocked in the metastore
  (`fs_hours.blocked_reason`), so compaction leaves them alone too;
- `records_accounted`: consumed = landed + quarantined (DESIGN invariant 3), blocking.

A block is cleared only by a person (`flowsuite quality unblock P [--hour H]`): a later
landing that passes says nothing about the rows that failed, which are still in the hour.

Freshness and volume checks, which look at the product over time rather than at one batch,
live in `quality.freshness` and are assembled with these by `build_quality_definitions`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg
import pyarrow as pa

from connectors.spec import DataProductSpec
from orchestration.keys import landed_key
from quality.expectations import ExpectationOutcome, check_names, run_suite, suite_columns

if TYPE_CHECKING:
    from connectors.flows import LandingResult
    from connectors.lake import Lake
    from connectors.metastore import Metastore

log = logging.getLogger(__name__)

RECORDS_ACCOUNTED = "records_accounted"
UNEXPECTED_SHOWN = 10



def _describe(exp_type: str, kwargs: dict[str, Any], severity: str) -> str:
    args = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in kwargs.items())
    effect = (
        "blocks the warehouse sync and compaction of the hours it touched when it fails"
        if severity == "error"
        else "reports only (severity warn)"
    )
    return f"Each landed batch passes {exp_type}({args}); {effect}."


def landing_check_specs(spec: DataProductSpec) -> list[dg.AssetCheckSpec]:
    """One check spec per expectation of the product, plus `records_accounted`."""
    key = landed_key(spec)
    specs = [
        dg.AssetCheckSpec(
            name=name,
            asset=key,
            description=_describe(exp.type, exp.kwargs, exp.severity),
            blocking=exp.severity == "error",
            metadata={"expectation_type": exp.type, "severity": exp.severity},
        )
        for name, exp in check_names(spec)
    ]
    specs.append(
        dg.AssetCheckSpec(
            name=RECORDS_ACCOUNTED,
            asset=key,
            description="Every consumed record was either landed or quarantined: consumed = landed + quarantined.",
            blocking=True,
        )
    )
    return specs


def landed_table(lake: Lake, result: LandingResult, spec: DataProductSpec | None = None) -> pa.Table:
    """The rows a landing committed (its landed files), for the suite to validate.

    Given the spec, only the columns its suite reads (`suite_columns`); a run writes all its
    files with the product's one lake schema, so each of them has every one of those columns.
    """
    if not result.files:
        return pa.table({})
    columns = suite_columns(spec) if spec is not None else None
    if columns == []:  # no expectations: nothing to read
        return pa.table({})
    return lake.read_tables(result.files, columns)


def _metadata(outcome: ExpectationOutcome, blocked: str | None) -> dict[str, Any]:
    md: dict[str, Any] = {
        "severity": outcome.severity,
        "expectation_type": outcome.type,
    }
    if outcome.column is not None:
        md["column"] = outcome.column
    observed = outcome.observed_value
    if isinstance(observed, bool) or observed is None:
        md["observed_value"] = dg.MetadataValue.text(json.dumps(observed))
    elif isinstance(observed, int | float):
        md["observed_value"] = observed
    elif isinstance(observed, dict | list):
        md["observed_value"] = dg.MetadataValue.json(observed)
    else:
        md["observed_value"] = dg.MetadataValue.text(str(observed))
    if outcome.element_count is not None:
        md["element_count"] = int(outcome.element_count)
    if outcome.unexpected_count is not None:
        md["unexpected_count"] = int(outcome.unexpected_count)
    if outcome.unexpected_percent is not None:
        md["unexpected_percent"] = float(round(outcome.unexpected_percent, 4))
    if outcome.partial_unexpected_list:
        md["unexpected_values"] = dg.MetadataValue.json(outcome.partial_unexpected_list[:UNEXPECTED_SHOWN])
    if outcome.details:
        md["details"] = dg.MetadataValue.json(outcome.details)
    if outcome.exception:
        md["exception"] = dg.MetadataValue.text(outcome.exception)
    if blocked:
        md["blocked_reason"] = dg.MetadataValue.text(blocked)
    return md


def _summary(outcome: ExpectationOutcome) -> str:
    if outcome.exception:
        return f"raised: {outcome.exception}"
    if outcome.unexpected_count is not None:
        pct = f" ({outcome.unexpected_percent:.2f}%)" if outcome.unexpected_percent is not None else ""
        shown = f", e.g. {outcome.partial_unexpected_list[:3]}" if outcome.partial_unexpected_list else ""
        return f"{outcome.unexpected_count} of {outcome.element_count} unexpected{pct}{shown}"
    return f"observed {json.dumps(outcome.observed_value, default=str)}"


def block_reason(spec: DataProductSpec, run_id: str, failed: Sequence[ExpectationOutcome | str]) -> str:
    parts = [f"{f.name}: {_summary(f)}" if isinstance(f, ExpectationOutcome) else f for f in failed]
    return (
        f"blocking check(s) failed on {spec.name}/landed in run {run_id}: " + "; ".join(parts)
        + f" — fix the data or the expectation, then `flowsuite quality unblock {spec.name}`"
    )


def landing_check_results(
    spec: DataProductSpec,
    table: pa.Table | None,
    result: LandingResult,
    metastore: Metastore | None,
    suites_dir: Any = None,
) -> list[dg.AssetCheckResult]:
    """Run the suite on the rows this landing committed; one result per check spec.

    When an `error` expectation (or `records_accounted`) fails, the hours the landing touched
    are blocked in the metastore, with a reason naming the checks and the run.
    """
    key = landed_key(spec)
    if table is None:
        table = pa.table({})
    if table.num_rows == 0 and table.num_columns == 0:
        from connectors.formats import lake_schema

        table = lake_schema(spec).empty_table()
    try:
        outcomes = run_suite(spec, table, suites_dir)
    except Exception as exc:  # a suite that cannot run is a failed gate, not a crash
        log.exception("%s: the quality suite could not run", spec.name)
        outcomes = [
            ExpectationOutcome(
                name=name, type=exp.type, column=exp.kwargs.get("column"), severity=exp.severity,
                success=False, exception=f"the suite could not run on this batch: {type(exc).__name__}: {exc}",
            )
            for name, exp in check_names(spec, suites_dir)
        ]
    accounted = result.accounted  # the engine's check (it raises before a commit that fails it)
    failed: list[ExpectationOutcome | str] = [o for o in outcomes if o.blocks]
    if not accounted:
        failed.append(
            f"{RECORDS_ACCOUNTED}: consumed {result.consumed} != landed {result.landed} + "
            f"quarantined {result.quarantined}"
        )
    reason: str | None = None
    touched = sorted(set(result.hours) | {h for p in result.partitions.values() for h in p.hours})
    if failed:
        reason = block_reason(spec, result.run_id, failed)
        if metastore is not None and touched:
            metastore.block_hours(spec.name, touched, reason)
            log.warning("%s: blocked hours %s: %s", spec.name, ", ".join(touched), reason)
    results = []
    for o in outcomes:
        results.append(
            dg.AssetCheckResult(
                asset_key=key,
                check_name=o.name,
                passed=o.success,
                severity=dg.AssetCheckSeverity.ERROR if o.severity == "error" else dg.AssetCheckSeverity.WARN,
                metadata=_metadata(o, reason if o.blocks else None)
                | ({"blocked_hours": dg.MetadataValue.json(touched)} if o.blocks else {}),
                description=None if o.success else _summary(o),
            )
        )
    results.append(
        dg.AssetCheckResult(
            asset_key=key,
            check_name=RECORDS_ACCOUNTED,
            passed=accounted,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "consumed": result.consumed,
                "landed": result.landed,
                "quarantined": result.quarantined,
                **({"blocked_reason": dg.MetadataValue.text(reason)} if not accounted and reason else {}),
            },
        )
    )
    return results


def blocked_hours(metastore: Metastore, product: str) -> dict[str, str]:
    """Hour → reason for the product's hours blocked by a failed quality gate."""
    return {h.hour: h.blocked_reason for h in metastore.hours(product) if h.blocked_reason}


def build_quality_definitions(spec: DataProductSpec) -> dg.Definitions:
    """The product's standalone checks on `P/landed` (freshness, volume), for the factory to merge."""
    from quality.freshness import freshness_and_volume_checks

    checks = freshness_and_volume_checks(spec)
    if not checks:
        return dg.Definitions()
    job = dg.define_asset_job(
        f"{spec.name}_quality_checks",
        selection=dg.AssetSelection.checks(*checks),
        description=f"Freshness and volume checks of {spec.name}/landed.",
    )
    schedule = dg.ScheduleDefinition(
        name=f"{spec.name}_quality_schedule",
        job=job,
        cron_schedule="*/10 * * * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="A missing landing is only noticed by looking: run freshness and volume every 10 minutes.",
    )
    return dg.Definitions(asset_checks=checks, jobs=[job], schedules=[schedule])


def landing_on_invalid(spec: DataProductSpec, flowsuite: Any) -> Any:
    """The `on_invalid` hook of `land()` for this product: the DLQ publisher when
    `quality.on_invalid` is `dlq`, else None (quarantine only; `fail` is handled by land)."""
    from connectors.kafka import dlq_publisher

    return dlq_publisher(spec, flowsuite.kafka_bootstrap, flowsuite.kafka())
