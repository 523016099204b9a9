"""The offset sensor of each data product: request a landing when enough records wait."""

from __future__ import annotations

import dagster as dg

from connectors.spec import DataProductSpec


def build_offset_sensor(spec: DataProductSpec, job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{spec.name}_offsets",
        job=job,
        minimum_interval_seconds=max(1, int(spec.trigger.sensor_interval.total_seconds())),
        default_status=dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={"flowsuite"},
    )
    def offsets_sensor(context: dg.SensorEvaluationContext):
        return dg.SkipReason("not implemented yet")

    return offsets_sensor
