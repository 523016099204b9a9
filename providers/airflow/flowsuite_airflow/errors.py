"""The Airflow face of the error family (connectors/errors.py): one mapping, used by every operator.

- `TerminalError` → `AirflowFailException`: the task fails at once, its retries are not used
  (a bad spec, an unknown product, history lost under the pipeline, a blocked hour): the same
  try would fail the same way, a person must change something first.
- `TransientError` → `AirflowException`: a plain failure, which the task's `retries` repeat
  (a broker or database away, a lease lost, a concurrent writer that won a compare-and-set).

The message is the engine's, unchanged, with the error's class name in front so a log reader
sees the kind without a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from connectors.errors import FlowsuiteError


def airflow_error(exc: FlowsuiteError) -> AirflowException:
    """The Airflow exception for an engine error: fail without retries unless it is transient."""
    kind = AirflowException if exc.transient else AirflowFailException
    return kind(f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Raise every FlowsuiteError of the block as its Airflow exception (airflow_error)."""
    try:
        yield
    except FlowsuiteError as exc:
        raise airflow_error(exc) from exc
