"""Dagster runs as the owners of metastore claims.

A claim (a landing range, a compaction hour) names the run that holds it. When that run has
failed or was canceled, its claim can be taken over at once instead of waiting for the lease
to run out; any other run id (an ad-hoc CLI run, another instance) is left to its lease.
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

DEAD_RUN_STATUSES = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def dead_run_checker(instance: dg.DagsterInstance) -> Callable[[str], bool]:
    """`is_dead(run_id)` for connectors' claim takeover, answered by this Dagster instance."""

    def is_dead(run_id: str) -> bool:
        try:
            run = instance.get_run_by_id(run_id)
        except Exception:  # noqa: BLE001 - not a Dagster run id: rely on the lease
            return False
        return run is not None and run.status in DEAD_RUN_STATUSES

    return is_dead
