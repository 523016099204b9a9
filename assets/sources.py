"""Source connectors as Dagster assets: a legacy table published to a product's topic.

For every declaration in `dataproducts/sources/` (connectors/sources/sql.py) that feeds the
product being built:

- an external asset `legacy/<table>` (the table we only read);
- `<product>/published`, downstream of it: materializing it publishes the rows past the
  cursor as CloudEvents and reports how many, the cursor before/after, the delay's upper
  bound and the partitions written;
- the job `<connector>_publish` and the sensor `<connector>_poll` (default **stopped**; every
  `poll_interval` it asks the table whether a row is past the cursor and requests a run keyed
  by the cursor's generation, so a tick never starts a second run for the same cursor).
"""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.

from datetime import UTC, datetime

import dagster as dg

from connectors.errors import FlowsuiteError
from connectors.sources import (
    SOURCE_LEASE_S,
    SourceError,
    SourceSpec,
    UnsetVariableError,
    load_sources,
    publish,
    read_cursor,
    rows_waiting,
)
from connectors.spec import DataProductSpec
from orchestration.failures import failure
from orchestration.keys import legacy_key, published_key
from orchestration.resources import FlowsuiteResource


def _sources_for(spec: DataProductSpec) -> list[SourceSpec]:
    from connectors.settings import load_settings

    return [s for s in load_sources(load_settings().products_dir) if s.product == spec.name]


def _kind(source: SourceSpec) -> str:
    """The asset kind of the legacy table, from its URL's scheme; "sql" while a ${VAR} of the URL
    is unset (the definitions still load: the publish step fails, terminally, naming it)."""
    try:
        url = source.resolved_url()
    except UnsetVariableError:
        return "sql"
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    return {"postgresql": "postgres", "mariadb": "mysql"}.get(scheme, scheme or "sql")


def build_source_definitions(spec: DataProductSpec) -> dg.Definitions:
    sources = _sources_for(spec)
    if not sources:
        return dg.Definitions()
    if len(sources) > 1:
        raise SourceError(f"{spec.name}: {len(sources)} source connectors feed it; one product has one source")
    source = sources[0]
    if source.mode == "cdc":  # change data capture from PostgreSQL's log
        from assets.cdc import build_cdc_definitions

        return build_cdc_definitions(spec, source, published_key(spec), legacy_key(source.table))
    legacy = dg.AssetSpec(
        legacy_key(source.table),
        group_name=spec.name,
        kinds={_kind(source)},
        description=f"The legacy table `{source.table}` ({source.connection.url}), read by the source connector "
                    f"{source.name}; flowsuite never writes to it.",
    )

    @dg.asset(
        key=published_key(spec),
        deps=[legacy.key],
        group_name=spec.name,
        owners=[spec.owner],
        kinds={"kafka", "cloudevents"},
        tags={"flowsuite/product": spec.name, "flowsuite/source": source.name},
        description=(
            f"Rows of `{source.table}` published to topic {spec.topic} as CloudEvents (binary mode, "
            f"ce_source {source.ce_source}, ce_type {source.ce_type}) in {source.mode} mode with a "
            f"{int(source.timestamp_delay.total_seconds())}s delay; the cursor advances only after the broker "
            "acknowledged every event."
        ),
    )
    def published(context: dg.AssetExecutionContext, flowsuite: FlowsuiteResource) -> dg.MaterializeResult:
        try:
            run = flowsuite.engine().run_context(run_id=context.run_id, lease_s=SOURCE_LEASE_S)
            r = publish(source, spec, run)
        except FlowsuiteError as exc:
            raise failure(exc) from None
        context.log.info(f"{source.name}: published {r.published} row(s) to {r.topic}; cursor {r.cursor_after.describe()}")
        return dg.MaterializeResult(metadata={
            "rows_published": r.published,
            "batches": r.batches,
            "per_partition": dg.MetadataValue.json({str(p): n for p, n in sorted(r.per_partition.items())}),
            "cursor_before": r.cursor_before.describe(),
            "cursor_after": r.cursor_after.describe(),
            "upper_bound": r.upper_bound.isoformat() if r.upper_bound else "none (incrementing)",
            "mode": r.mode,
            "topic": r.topic,
            "duration_s": round(r.duration_s, 3),
        })

    job = dg.define_asset_job(
        f"{source.name}_publish",
        selection=dg.AssetSelection.assets(published_key(spec)),
        description=f"Publish new rows of {source.table} to {spec.topic}.",
        tags={"flowsuite/product": spec.name, "flowsuite/kind": "source"},
    )

    @dg.sensor(
        name=f"{source.name}_poll",
        job=job,
        minimum_interval_seconds=max(1, int(source.poll_interval.total_seconds())),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Requests {source.name}_publish when {source.table} has rows past the connector's cursor.",
    )
    def poll(context: dg.SensorEvaluationContext, flowsuite: FlowsuiteResource):
        metastore = flowsuite.metastore()
        waiting = rows_waiting(source, metastore, now=datetime.now(UTC))
        if not waiting:
            return dg.SkipReason(f"no row of {source.table} past the cursor (and older than the delay)")
        generation = read_cursor(metastore, source.name).generation
        return dg.RunRequest(run_key=f"{source.name}:g{generation}", tags={"flowsuite/source": source.name})

    return dg.Definitions(assets=[legacy, published], jobs=[job], sensors=[poll])

