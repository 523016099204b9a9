"""The `P/landed` asset of each data product: Kafka offset ranges → hourly Parquet.

Thin over `connectors.landing.land`: materializing it consumes everything available from the
committed offsets (up to the product's cap), commits files and offsets in the metastore, and
reports what a person wants to see — consumed / landed / quarantined, files, bytes, offset
ranges per partition, hours touched and the lag left.
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations
# (config and resource parameters) at definition time.

from typing import Any

import dagster as dg
import pyarrow as pa

from connectors.decode import lake_schema
from connectors.kafka_reader import (
    HistoryLostError,
    KafkaReadError,
    consumer_config,
    probe_partitions,
)
from connectors.lake import HOUR_DIR, Lake
from connectors.landing import InvalidRecordsError, LandingResult, land
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec
from orchestration.resources import FlowsuiteResource

_DEAD_RUN_STATUSES = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


class LandingConfig(dg.Config):
    """Optional limits of one landing run; by default, every partition up to the spec's cap."""

    partitions: list[int] | None = None
    max_records: int | None = None


def landed_key(spec: DataProductSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.name, "landed"])


def _quality_hooks() -> Any:
    """`quality.checks` when the quality layer is installed, else None (no checks)."""
    try:
        import quality.checks as checks
    except ImportError:
        return None
    return checks


def landing_kinds(spec: DataProductSpec, lake_url: str | None = None) -> set[str]:
    kinds = {"kafka", "parquet"}
    if (lake_url or "").startswith("s3://"):
        kinds.add("s3")
    return kinds


def build_landing_definitions(spec: DataProductSpec) -> dg.Definitions:
    """The landed asset of one product (with its in-run quality checks when available)."""
    checks = _quality_hooks()
    check_specs = list(checks.landing_check_specs(spec)) if checks is not None else []
    lake_url = _configured_lake_url()

    @dg.asset(
        key=landed_key(spec),
        group_name=spec.name,
        owners=[spec.owner],
        kinds=landing_kinds(spec, lake_url),
        description=(spec.description.strip() or f"Records of topic {spec.topic}, landed as hourly Parquet.")
        + f"\n\nTopic `{spec.topic}` landed as hourly Parquet under `<lake>/{spec.name}/dt=…/hour=…/`.",
        check_specs=check_specs or None,
        tags={"flowsuite/product": spec.name},
        metadata={"flowsuite/topic": spec.topic, "flowsuite/consumer_group": spec.consumer_group},
    )
    def landed(context: dg.AssetExecutionContext, config: LandingConfig, flowsuite: FlowsuiteResource):
        return materialize_landing(context, spec, config, flowsuite, check_specs)

    return dg.Definitions(assets=[landed])


def _configured_lake_url() -> str | None:
    try:
        from orchestration.settings import load_settings

        return load_settings().lake_url
    except Exception:  # noqa: BLE001 - only decides the "s3" kind tag
        return None


def materialize_landing(
    context: dg.AssetExecutionContext,
    spec: DataProductSpec,
    config: LandingConfig,
    flowsuite: FlowsuiteResource,
    check_specs: list[dg.AssetCheckSpec],
) -> dg.MaterializeResult:
    lake, metastore = flowsuite.lake(), flowsuite.metastore()
    instance = context.instance

    def is_dead(run_id: str) -> bool:
        try:
            run = instance.get_run_by_id(run_id)
        except Exception:  # noqa: BLE001 - not a Dagster run id: rely on the lease
            return False
        return run is not None and run.status in _DEAD_RUN_STATUSES

    on_invalid = None
    checks = _quality_hooks()
    if checks is not None and hasattr(checks, "landing_on_invalid"):
        on_invalid = checks.landing_on_invalid(spec, flowsuite)

    try:
        result = land(
            spec,
            lake=lake,
            metastore=metastore,
            bootstrap=flowsuite.kafka_bootstrap,
            kafka_config=flowsuite.kafka(),
            run_id=context.run_id,
            partitions=config.partitions,
            max_records=config.max_records,
            is_dead=is_dead,
            on_invalid=on_invalid,
        )
    except (HistoryLostError, InvalidRecordsError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except KafkaReadError as exc:
        raise dg.Failure(description=str(exc)) from None

    if result.consumed != result.landed + result.quarantined:
        raise dg.Failure(
            description=(
                f"{spec.name}: consumed {result.consumed} != landed {result.landed} + "
                f"quarantined {result.quarantined}; nothing may be lost silently"
            )
        )
    lag = _lag_after(spec, flowsuite, result)
    metadata = landing_metadata(result, lag)
    for p, reason in result.skipped.items():
        context.log.warning(f"partition {p} skipped: {reason}")
    check_results: list[dg.AssetCheckResult] = []
    if check_specs and checks is not None:
        table = lake.read_tables(result.files) if result.files else lake_schema(spec).empty_table()
        check_results = list(checks.landing_check_results(spec, table, result, metastore))
    return dg.MaterializeResult(metadata=metadata, check_results=check_results or None)


def _lag_after(spec: DataProductSpec, flowsuite: FlowsuiteResource, result: LandingResult) -> dict[int, int | None]:
    """Records left waiting per landed partition after the run (one probe; a hint if it fails)."""
    ends = {p: pl.end for p, pl in result.partitions.items()}
    if not ends:
        return {}
    conf = consumer_config(flowsuite.kafka_bootstrap, spec.consumer_group, flowsuite.kafka())
    try:
        probes = probe_partitions(conf, spec.topic, ends)
    except Exception:  # noqa: BLE001 - lag is informative; the landing itself succeeded
        return {p: None for p in ends}
    return {p: probe.waiting for p, probe in probes.items()}


def landing_metadata(result: LandingResult, lag: dict[int, int | None]) -> dict[str, Any]:
    """Metadata of one landing run, in the words a data engineer uses."""
    offsets = {
        str(p): {
            "start": pl.start,
            "end": pl.end,
            "records": pl.consumed,
            "reached_eof": pl.reached_eof,
            **({"skipped": pl.skipped} if pl.skipped else {}),
            **({"took_over_from": pl.took_over_from} if pl.took_over_from else {}),
        }
        for p, pl in sorted(result.partitions.items())
    }
    hours = result.hours
    files_per_hour: dict[str, int] = {}
    for pl in result.partitions.values():
        for f in pl.files:
            hour = _hour_of(f)
            files_per_hour[hour] = files_per_hour.get(hour, 0) + 1
    hour_rows = "\n".join(f"| {h} | {n:,} | {files_per_hour.get(h, 0)} |" for h, n in hours.items())
    part_rows = "\n".join(
        f"| {p} | {pl.start:,} → {pl.end:,} | {pl.consumed:,} | {'yes' if pl.reached_eof else 'no'} | "
        f"{'?' if lag.get(p) is None else format(lag[p], ',')} | {pl.skipped or ''} |"
        for p, pl in sorted(result.partitions.items())
    )
    total_lag = sum(v for v in lag.values() if v is not None)
    metadata: dict[str, Any] = {
        "records_consumed": dg.MetadataValue.int(result.consumed),
        "records_landed": dg.MetadataValue.int(result.landed),
        "records_quarantined": dg.MetadataValue.int(result.quarantined),
        "files": dg.MetadataValue.int(len(result.files)),
        "bytes": dg.MetadataValue.int(result.bytes),
        "offset_ranges": dg.MetadataValue.json(offsets),
        "hours_touched": dg.MetadataValue.json(list(hours)),
        "reopened_hours": dg.MetadataValue.json(result.reopened_hours),
        "lag_after_run": dg.MetadataValue.int(total_lag),
        "lag_per_partition": dg.MetadataValue.json({str(p): v for p, v in sorted(lag.items())}),
        "duration_s": dg.MetadataValue.float(round(result.duration_s, 3)),
        "partitions": dg.MetadataValue.md(
            "| partition | offsets | records | reached EOF | lag left | skipped |\n|---|---|---|---|---|---|\n"
            + part_rows
        ),
        "hours": dg.MetadataValue.md(
            "| hour | rows | files |\n|---|---|---|\n" + (hour_rows or "| (none) | 0 | 0 |")
        ),
        "dagster/row_count": dg.MetadataValue.int(result.landed),
    }
    if result.skipped and len(result.skipped) == len(result.partitions):
        metadata["skipped"] = dg.MetadataValue.text(
            "every partition is claimed by another live run; nothing landed: "
            + "; ".join(f"p{p}: {r}" for p, r in sorted(result.skipped.items()))
        )
    return metadata


def _hour_of(path: str) -> str:
    """'2026-11-26-10' from a path under `dt=2026-11-26/hour=10`."""
    match = HOUR_DIR.search(path)
    return f"{match.group(1)}-{match.group(2)}" if match else "?"


def read_landed(lake: Lake, metastore: Metastore, product: str) -> pa.Table:
    """Every live landed/compacted row of a product, as the metastore lists it."""
    return lake.read_tables(f.path for f in metastore.live_files(product))

