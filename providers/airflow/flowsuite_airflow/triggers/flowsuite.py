"""FlowsuiteHourTrigger: waits, in the triggerer's event loop, until an hour is whole.

No worker slot is held while waiting: the sensor defers to this trigger, which asks the
metastore every `poll_interval` seconds (the synchronous SQL runs in a thread, off the event
loop) and fires once — `ready` with the hour's files, rows and offset ranges, or `blocked`
with the quality gate's reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from flowsuite_airflow.engine import hour_status
from flowsuite_airflow.hooks.flowsuite import FlowsuiteHook


class FlowsuiteHourTrigger(BaseTrigger):
    def __init__(self, product: str, hour: str, flowsuite_conn_id: str = FlowsuiteHook.default_conn_name,
                 poll_interval: float = 60.0):
        super().__init__()
        self.product, self.hour = product, hour
        self.flowsuite_conn_id, self.poll_interval = flowsuite_conn_id, float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # The connection id, never the URLs: the triggerer resolves them itself.
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"product": self.product, "hour": self.hour, "flowsuite_conn_id": self.flowsuite_conn_id,
             "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        config = await FlowsuiteHook(self.flowsuite_conn_id).aget_conn()
        metastore = await asyncio.to_thread(config.metastore)
        lake = await asyncio.to_thread(config.lake)
        said = None
        while True:
            status = await asyncio.to_thread(hour_status, metastore, lake, self.product, self.hour)
            if status.state == "ready":
                self.log.info("%s", status.reason)
                yield TriggerEvent({"status": "ready", "reason": status.reason, "hour_info": status.info})
                return
            if status.state == "blocked":
                yield TriggerEvent({"status": "blocked", "reason": status.reason})
                return
            if status.reason != said:  # say each new reason once, not every poll
                self.log.info("waiting: %s", status.reason)
                said = status.reason
            await asyncio.sleep(self.poll_interval)
