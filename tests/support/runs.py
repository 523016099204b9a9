"""A run's context for tests that call the flows directly (connectors/flows/context.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connectors.flows import RunContext


def run_at(*, lake: Any, metastore: Any, now: datetime | None = None, **values: Any) -> RunContext:
    """The RunContext of these stores (`lake=None` for a step that writes no lake, a source's
    publish); `now` fixes the clock that decides which hours are closed (which rows are old enough)."""
    if now is not None:
        values["clock"] = now.timestamp
    return RunContext(lake=lake, metastore=metastore, **values)
