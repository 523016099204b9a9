"""A change-data-capture source as Dagster assets: a PostgreSQL table's changes on a product's topic.

For a declaration with `mode: cdc` (connectors/sources/cdc) feeding the product being built:

- an external asset `legacy/<table>` (the table whose log we read; never written);
- `<product>/published`, downstream of it: materializing it runs capture until it has caught
  up with the server's WAL position at the start (the snapshot first, on the first run) and
  reports transactions, events, the position before/after and the slot's retained WAL and lag;
- the asset check `slot_retained_wal` (blocking=False) on it: fails when the slot keeps more
  WAL than `max_retained_wal` of the source file (a stopped capture fills the server's disk);
- the job `<connector>_capture` and the sensor `<connector>_poll` (default **stopped**; every
  `poll_interval` it asks the server whether the slot has unconfirmed WAL and requests a run
  keyed by the slot's confirmed position, so one position never starts two runs).

`flowsuite cdc run NAME --follow` is the continuous, millisecond-latency way (orchestration/cli/cdc.py).
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.

import dagster as dg

from connectors.errors import FlowsuiteError
from connectors.sources.cdc.checks import slot_report
from connectors.sources.cdc.pgoutput import lsn_text
from connectors.sources.cdc.server import CdcError
from connectors.sources.cdc.spec import CdcSourceSpec
from connectors.sources.cdc.stream import capture
from connectors.sources.common import UnsetVariableError
from connectors.spec import DataProductSpec
from orchestration.failures import failure
from orchestration.resources import FlowsuiteResource

RETAINED_WAL_CHECK = "slot_retained_wal"


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 1024**2, 2)


def retained_wal_result(source: CdcSourceSpec) -> dg.AssetCheckResult:
    try:
        info = slot_report(source)
    except (CdcError, UnsetVariableError) as exc:  # the server away, or its URL's ${VAR} unset
        return dg.AssetCheckResult(passed=False, description=f"cannot read the slot: {exc}")
    if info is None:
        return dg.AssetCheckResult(passed=True, description=f"slot {source.slot_name} does not exist yet",
                                   metadata={"slot": source.slot_name})
    retained = info.retained_wal_bytes or 0
    return dg.AssetCheckResult(
        passed=retained <= source.max_retained_wal,
        severity=dg.AssetCheckSeverity.ERROR,
        description=info.describe() + f"; bound {source.max_retained_wal / 1024**2:.0f} MB (max_retained_wal)",
        metadata={"retained_wal_mb": _mb(info.retained_wal_bytes), "lag_mb": _mb(info.lag_bytes),
                  "bound_mb": _mb(source.max_retained_wal), "active": info.active, "wal_status": info.wal_status or ""},
    )


def build_cdc_definitions(spec: DataProductSpec, source: CdcSourceSpec, published_key: dg.AssetKey,
                          legacy_key: dg.AssetKey) -> dg.Definitions:
    legacy = dg.AssetSpec(
        legacy_key,
        group_name=spec.name,
        kinds={"postgres"},
        description=f"The PostgreSQL table `{source.qualified_table}`, whose changes the capture {source.name} reads "
                    f"from the write-ahead log (publication {source.publication_name}, slot {source.slot_name}); "
                    "flowsuite never writes to it.",
    )

    @dg.asset(
        key=published_key,
        deps=[legacy.key],
        group_name=spec.name,
        owners=[spec.owner],
        kinds={"kafka", "cloudevents"},
        tags={"flowsuite/product": spec.name, "flowsuite/source": source.name},
        check_specs=[dg.AssetCheckSpec(RETAINED_WAL_CHECK, asset=published_key,
                                       description="The slot retains at most max_retained_wal of WAL.")],
        description=(
            f"Every committed change of `{source.qualified_table}` published to topic {spec.topic} as CloudEvents "
            f"with Debezium's data layout (ce_source {source.ce_source}); the position moves only after the broker "
            "acknowledged every event, and the server is told only after the position was recorded."
        ),
    )
    def published(context: dg.AssetExecutionContext, flowsuite: FlowsuiteResource):
        try:
            r = capture(source, spec, flowsuite.run_context(context.run_id))
        except FlowsuiteError as exc:
            raise failure(exc) from None
        for warning in r.warnings:
            context.log.warning(warning)
        slot = r.slot_after
        context.log.info(f"{source.name}: {r.transactions} transaction(s), {r.events} event(s) to {r.topic}")
        yield dg.MaterializeResult(metadata={
            "snapshot_rows": r.snapshot_rows,
            "transactions": r.transactions,
            "events": r.events,
            "skipped_transactions": r.skipped_transactions,
            "position_before": lsn_text(r.position_before) if r.position_before else "none",
            "position_after": lsn_text(r.position_after) if r.position_after else "none",
            "retained_wal_mb": _mb(slot.retained_wal_bytes) if slot else None,
            "lag_mb": _mb(slot.lag_bytes) if slot else None,
            "topic": r.topic,
            "duration_s": round(r.duration_s, 3),
        })
        yield retained_wal_result(source)

    job = dg.define_asset_job(
        f"{source.name}_capture",
        selection=dg.AssetSelection.assets(published_key),
        description=f"Capture the changes of {source.qualified_table} until caught up.",
        tags={"flowsuite/product": spec.name, "flowsuite/kind": "source"},
    )

    @dg.sensor(
        name=f"{source.name}_poll",
        job=job,
        minimum_interval_seconds=max(1, int(source.poll_interval.total_seconds())),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Requests {source.name}_capture when the slot {source.slot_name} has unconfirmed WAL.",
    )
    def poll(context: dg.SensorEvaluationContext):
        try:
            info = slot_report(source)
        except CdcError as exc:
            return dg.SkipReason(f"cannot reach the source database: {exc}")
        except UnsetVariableError as exc:
            return dg.SkipReason(f"cannot connect to the source database: {exc}")
        if info is None:
            return dg.RunRequest(run_key=f"{source.name}:snapshot", tags={"flowsuite/source": source.name})
        if not info.lag_bytes:
            return dg.SkipReason(f"slot {source.slot_name} has confirmed everything")
        confirmed = lsn_text(info.confirmed_flush_lsn or 0)
        return dg.RunRequest(run_key=f"{source.name}:{confirmed}", tags={"flowsuite/source": source.name})

    return dg.Definitions(assets=[legacy, published], jobs=[job], sensors=[poll])
