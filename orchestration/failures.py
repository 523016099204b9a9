"""The Dagster face of the error family (connectors/errors.py): one mapping, used by every asset.

A `FlowsuiteError` becomes a `dg.Failure` whose description is the engine's message, unchanged;
`allow_retries` is the error's kind, so a run or op retry policy repeats a transient failure (a
broker away, a lost compare-and-set) and never a terminal one (a bad spec, lost history, an hour
blocked by its quality gate), which would fail the same way again.
"""

from __future__ import annotations

import dagster as dg

from connectors.errors import FlowsuiteError


def failure(exc: FlowsuiteError) -> dg.Failure:
    """The `dg.Failure` for an engine error: its message, retries only when it is transient."""
    return dg.Failure(description=str(exc), allow_retries=exc.transient,
                      metadata={"flowsuite/error": type(exc).__name__,
                                "flowsuite/transient": exc.transient})
