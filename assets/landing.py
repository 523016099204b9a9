"""The `P/landed` asset of each data product: Kafka offset ranges → hourly Parquet.

Thin over `connectors.flows.landing.land`: materializing it consumes everything available from the
committed offsets (up to the product's cap), commits files and offsets in the metastore, and
reports what a person wants to see — consumed / landed / quarantined, files, bytes, offset
ranges per partition, hours touched and the lag left.

**Parallel landing.** The asset is graph-backed, so Kafka partitions — the unit of
parallelism — become separate steps: `<P>__landed_plan` lists the partitions and fans out one
dynamic `<P>__landed_partition` step per partition (each claims, writes and commits its own
partition's range; the multiprocess executor here, `k8s_job_executor` or ECS in production
run them at once), and `<P>__landed_collect` merges their results into the one
materialization, its metadata and the in-run quality checks. Run config
(`ops: {<P>__landed: {config: {parallel: false}}}`) lands every partition in one step; by
default a topic with two or more partitions is landed in parallel.
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations
# (config and resource parameters) at definition time.

import math
from typing import Any, NamedTuple

import dagster as dg

import quality.checks as quality_checks
from assets.metadata import landing_links
from assets.runs import dead_run_checker
from connectors.errors import FlowsuiteError
from connectors.flows import LandingResult, land
from connectors.kafka import (
    consumer_config,
    partitions_of,
    probe_partitions,
)
from connectors.lake import HOUR_DIR
from connectors.spec import DataProductSpec
from orchestration.failures import failure
from orchestration.keys import landed_key
from orchestration.resources import FlowsuiteResource


class LandingConfig(dg.Config):
    """Optional limits of one landing run; by default, every partition up to the spec's cap.

    `parallel`: one step per Kafka partition (True), one step for all (False), or — None, the
    default — one per partition when the run lands two or more partitions."""

    partitions: list[int] | None = None
    max_records: int | None = None
    parallel: bool | None = None


class LandingStep(NamedTuple):
    """What one landing step lands: these partitions (None: all) up to this many records."""

    partitions: list[int] | None
    max_records: int | None


def plan_landing_steps(spec: DataProductSpec, config: LandingConfig, available: list[int]) -> list[LandingStep]:
    """One step per partition when landing in parallel (the cap shared evenly), else one step."""
    wanted = sorted(set(available if config.partitions is None else config.partitions))
    parallel = config.parallel if config.parallel is not None else len(wanted) >= 2
    if not parallel or len(wanted) < 2:
        return [LandingStep(config.partitions, config.max_records)]
    cap = config.max_records if config.max_records is not None else spec.trigger.max_records_per_run
    return [LandingStep([p], math.ceil(cap / len(wanted))) for p in wanted]


def merge_landing_results(results: list[LandingResult]) -> LandingResult:
    """The steps' results as one run's: partitions side by side, reopened hours united."""
    first = results[0]
    partitions = {p: pl for r in results for p, pl in r.partitions.items()}
    reopened = sorted({h for r in results for h in r.reopened_hours})
    return LandingResult(first.product, first.topic, first.run_id, dict(sorted(partitions.items())), reopened,
                         max(r.duration_s for r in results))



def landing_kinds(spec: DataProductSpec, lake_url: str | None = None) -> set[str]:
    kinds = {"kafka", "parquet"}
    if (lake_url or "").startswith("s3://"):
        kinds.add("s3")
    return kinds


def build_landing_definitions(spec: DataProductSpec, upstream: dg.AssetKey | None = None) -> dg.Definitions:
    """The landed asset of one product (with its in-run quality checks when available).

    `upstream`: the asset that writes the product's topic (a source connector's
    `<P>/published`), drawn as P/landed's parent so the lineage runs from the legacy table
    through the topic to the lake and the warehouse. The sensor's runs select P/landed alone
    and land whatever the topic holds; a run that selects both publishes first."""
    check_specs = list(quality_checks.landing_check_specs(spec))
    lake_url = _configured_lake_url()

    description = (
        (spec.description.strip() or f"Records of topic {spec.topic}, landed as hourly Parquet.")
        + f"\n\nTopic `{spec.topic}` landed as hourly Parquet under `<lake>/{spec.name}/dt=…/hour=…/`,"
        " one step per Kafka partition."
        + (f"\n\nPushed by {', '.join(s.org for s in spec.inbound.senders)} (other organisations) through "
           f"`POST /inbound/{spec.name}`: see `{spec.name}/inbound`." if spec.inbound else "")
    )
    base = landed_key(spec).to_python_identifier()  # "clicks__landed"
    check_outs = {s.get_python_identifier(): dg.Out(is_required=False) for s in check_specs}

    @dg.op(name=f"{base}_plan", out=dg.DynamicOut(), ins={"after": dg.In(dg.Nothing)},
           tags={"flowsuite/product": spec.name})
    def plan(context: dg.OpExecutionContext, config: LandingConfig, flowsuite: FlowsuiteResource):
        """List the topic's partitions and fan out one landing step per partition."""
        conf = consumer_config(flowsuite.kafka_bootstrap, spec.consumer_group, flowsuite.kafka())
        try:
            available = partitions_of(conf, spec.topic)
        except FlowsuiteError as exc:
            raise failure(exc) from None
        steps = plan_landing_steps(spec, config, available)
        context.log.info(f"{spec.name}: {len(steps)} landing step(s) over partitions {available}")
        for step in steps:
            key = "all" if step.partitions is None else "_".join(f"p{p}" for p in step.partitions)
            yield dg.DynamicOutput(step, mapping_key=key)

    @dg.op(name=f"{base}_partition", tags={"flowsuite/product": spec.name})
    def land_step(context: dg.OpExecutionContext, step, flowsuite: FlowsuiteResource):
        """Land one step's partitions: claim, write, commit their ranges."""
        return run_landing(context, spec, LandingConfig(partitions=step.partitions, max_records=step.max_records),
                           flowsuite)

    @dg.op(name=f"{base}_collect", out={"result": dg.Out(is_required=False), **check_outs},
           tags={"flowsuite/product": spec.name})
    def collect(context: dg.OpExecutionContext, results: list, flowsuite: FlowsuiteResource):
        """One materialization for the run: metadata of every partition and the quality checks."""
        return finish_landing(context, spec, merge_landing_results(results), flowsuite, check_specs,
                              steps=len(results))

    @dg.graph_asset(
        key=landed_key(spec),
        group_name=spec.name,
        owners=[spec.owner],
        kinds=landing_kinds(spec, lake_url),
        description=description,
        check_specs=check_specs or None,
        tags={"flowsuite/product": spec.name},
        metadata={"flowsuite/topic": spec.topic, "flowsuite/consumer_group": spec.consumer_group},
        config=dg.ConfigMapping(
            config_fn=lambda outer: {f"{base}_plan": {"config": dict(outer)}},
            config_schema=LandingConfig.to_config_schema(),
        ),
        # A graph-backed asset takes a dependency only as an input of one of its ops: the
        # writer of the topic maps to the plan step's Nothing input.
        ins={"writer": dg.AssetIn(key=upstream, dagster_type=dg.Nothing)} if upstream else None,
    )
    def landed(**writer):
        done = plan(**({"after": writer["writer"]} if writer else {})).map(land_step)
        outs = collect(done.collect())
        return outs._asdict() if check_outs else outs

    return dg.Definitions(assets=[landed])


def _configured_lake_url() -> str | None:
    try:
        from connectors.settings import load_settings

        return load_settings().lake_url
    except Exception:  # noqa: BLE001 - only decides the "s3" kind tag
        return None


def run_landing(
    context: dg.OpExecutionContext,
    spec: DataProductSpec,
    config: LandingConfig,
    flowsuite: FlowsuiteResource,
) -> LandingResult:
    """One landing step: `land` over the configured partitions, failures as dg.Failure. The
    engine checks consumed = landed + quarantined per partition before it commits
    (RecordsUnaccountedError, terminal): a result that comes back is accounted for."""
    lake, metastore = flowsuite.lake(), flowsuite.metastore()
    is_dead = dead_run_checker(context.instance)

    on_invalid = quality_checks.landing_on_invalid(spec, flowsuite)

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
    except FlowsuiteError as exc:
        raise failure(exc) from None
    for p, reason in result.skipped.items():
        context.log.warning(f"partition {p} skipped: {reason}")
    context.log.info(
        f"{spec.name}: partitions {sorted(result.partitions)}: consumed {result.consumed:,}, "
        f"landed {result.landed:,}, quarantined {result.quarantined:,} in {result.duration_s:.2f}s"
    )
    return result


def finish_landing(
    context: dg.OpExecutionContext,
    spec: DataProductSpec,
    result: LandingResult,
    flowsuite: FlowsuiteResource,
    check_specs: list[dg.AssetCheckSpec],
    steps: int = 1,
) -> dg.MaterializeResult:
    """The run's materialization: metadata, lag, and the in-run quality checks."""
    lake, metastore = flowsuite.lake(), flowsuite.metastore()
    lag = _lag_after(spec, flowsuite, result)
    metadata = landing_metadata(result, lag)
    metadata["landing_steps"] = dg.MetadataValue.int(steps)
    metadata.update(landing_links(spec, lake, result.hours))  # lake path, related assets
    check_results: list[dg.AssetCheckResult] = []
    if check_specs:
        table = quality_checks.landed_table(lake, result, spec)
        check_results = list(quality_checks.landing_check_results(spec, table, result, metastore))
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
