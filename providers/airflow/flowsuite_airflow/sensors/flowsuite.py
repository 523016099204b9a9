"""FlowsuiteHourSensor: wait until an hour of a data product is whole, then hand over its files.

Whole means what the metastore says (docs/lake.md): the hour is compacted, its `_SUCCESS`
marker was written at the hour's current generation, and no quality gate blocked it. A late
record reopens an hour; the sensor then waits for the next generation. The XCom it returns:

    {"product", "hour", "generation", "rows", "bytes", "compacted_at",
     "files": [{"path", "uri", "rows", "bytes", "offset_ranges"}, ...],
     "offset_ranges": {"<partition>": [[first, last], ...]}}

Read exactly `files[*].uri` — never a listing of the hour's folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from flowsuite_airflow.engine import UnknownProductError, hour_status, task_hour
from flowsuite_airflow.hooks.flowsuite import FlowsuiteHook
from flowsuite_airflow.triggers.flowsuite import FlowsuiteHourTrigger

# The hour before the run's data interval ends: for an @hourly DAG, the hour the run covers.
PREVIOUS_HOUR = "{{ (data_interval_end - macros.timedelta(hours=1)).strftime('%Y-%m-%d-%H') }}"


class FlowsuiteHourSensor(BaseSensorOperator):
    """Wait for `hour` ('2026-11-26-10', templated) of `product` to be whole.

    Deferrable by default: after one look it hands the wait to `FlowsuiteHourTrigger` and
    frees its worker slot. A blocked hour fails the task at once (no retry) with the reason;
    `timeout` (seconds, default 3 hours) bounds the whole wait.

    Fails at once, before any wait, on a product with no spec in the products folder (the
    land operator's message) and on an hour that is not one: `2026-11-26T10:30` is refused
    like a garbage hour, unless `truncate_to_hour=True` (a templated time inside the hour).
    """

    template_fields: Sequence[str] = ("product", "hour")
    ui_color = "#c6e2ff"

    def __init__(self, *, product: str, hour: str = PREVIOUS_HOUR,
                 flowsuite_conn_id: str = FlowsuiteHook.default_conn_name,
                 deferrable: bool = True, poke_interval: float = 60.0, timeout: float = 3 * 3600,
                 truncate_to_hour: bool = False, **kwargs: Any):
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.product, self.hour, self.truncate_to_hour = product, hour, truncate_to_hour
        self.flowsuite_conn_id, self.deferrable = flowsuite_conn_id, deferrable

    def _look(self) -> Any:
        config = FlowsuiteHook(self.flowsuite_conn_id).get_conn()
        return hour_status(config.metastore(), config.lake(), self.product, self._hour())

    def _hour(self) -> str:
        value = self.hour if isinstance(self.hour, str | datetime) else str(self.hour)
        try:
            return task_hour(value, truncate_to_hour=self.truncate_to_hour)
        except ValueError as exc:  # a wrong hour stays wrong: no retry
            raise AirflowFailException(str(exc)) from None

    def _check(self) -> None:
        """What no wait can fix, before the first look: an unknown product, a bad hour."""
        self._hour()
        try:
            FlowsuiteHook(self.flowsuite_conn_id).get_conn().spec(self.product)
        except UnknownProductError as exc:
            raise AirflowFailException(str(exc)) from None

    def poke(self, context: Any) -> PokeReturnValue | bool:
        status = self._look()
        if status.state == "blocked":
            raise AirflowFailException(status.reason)
        self.log.info("%s", status.reason)
        return PokeReturnValue(is_done=status.state == "ready", xcom_value=status.info)

    def execute(self, context: Any) -> Any:
        self._check()
        if not self.deferrable:
            return super().execute(context)
        status = self._look()
        if status.state == "blocked":
            raise AirflowFailException(status.reason)
        if status.state == "ready":
            self.log.info("%s", status.reason)
            return status.info
        self.log.info("deferring: %s", status.reason)
        self.defer(
            trigger=FlowsuiteHourTrigger(self.product, self._hour(), self.flowsuite_conn_id, self.poke_interval),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        if not event:
            raise AirflowException(f"{self.product} {self._hour()}: the trigger fired without an event")
        if event.get("status") == "blocked":
            raise AirflowFailException(event["reason"])
        if event.get("status") != "ready":
            raise AirflowException(f"{self.product} {self._hour()}: unexpected trigger event {event!r}")
        self.log.info("%s", event["reason"])
        return event["hour_info"]
