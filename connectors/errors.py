"""The one family of errors flowsuite raises on purpose, and the one question each face asks of it.

Every error the engine raises for a reason a person can act on derives from `FlowsuiteError`; its
message is written for that person (which product, file, field or offset, what was expected,
what to do) and never names a CLI flag or a Dagster concept: the faces add those. Two kinds, as
dlt's destination errors have them (`DestinationTerminalException` / `...TransientException`):

- `TerminalError`: trying the same thing again gives the same answer (a bad spec, a record the
  schema cannot read, history lost under the pipeline, a claim held by a live run). Retrying is
  wasted work; a person must change something first.
- `TransientError`: the same attempt may succeed later (a broker or database away, a lease
  lost to a slow heartbeat, a concurrent writer that won a compare-and-set). Orchestrators retry
  these, with backoff.

Concrete errors also derive from the built-in class their callers used to catch (`ValueError`,
`RuntimeError`), so `except ValueError` around a spec load keeps working. The faces map the
family once each: Dagster (`dg.Failure`, with a retry only when transient), the CLI (one line on
stderr, exit code 1) and Airflow (`AirflowFailException` for terminal errors, a plain failure
that the task's retries may repeat for transient ones).
"""

from __future__ import annotations


class FlowsuiteError(Exception):
    """Base of every error flowsuite raises on purpose; `transient` says whether a retry of
    the same attempt may succeed."""

    transient: bool = False

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class TerminalError(FlowsuiteError):
    """Retrying gives the same answer: a person must change the input, the spec or the state."""

    transient = False


class TransientError(FlowsuiteError):
    """The same attempt may succeed later (a service away, a lost race): retry with backoff."""

    transient = True


def is_transient(exc: BaseException) -> bool:
    """True for a flowsuite error marked transient; anything else is not known to be."""
    return isinstance(exc, FlowsuiteError) and exc.transient
