"""The root of `flowsuite`: one click group per area, composed here explicitly.

Adding an area is a module in this package exporting a click group (or command) and ONE line
in the "areas" block below, e.g. `cli.add_command(flow.group)`; nothing registers itself on
import. Commands take the settings with `@pass_settings` (orchestration/cli/common.py), raise
`CliError` for problems a user can fix, and end non-zero with `exit_with(code)`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from connectors.settings import load_settings
from orchestration.cli import (
    broker,
    cdc,
    contract,
    demo,
    flow,
    lake,
    land,
    offsets,
    produce_demo,
    quality,
    quarantine,
    status,
    table,
    validate,
    warehouse,
)
from orchestration.cli.common import CliError

EXIT_ERROR = 1  # a terminal error, or a problem of the command line: change something first
EXIT_TRANSIENT = 75  # EX_TEMPFAIL (sysexits.h): the same command may succeed later (retry it)


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to act on: printed as one line, without a traceback. The
    family (FlowsuiteError: terminal and transient — the engine's, the demo producer's, an
    ingest run's) and the client libraries' own (a broker that refuses, a file that cannot be read)."""
    from confluent_kafka import KafkaException

    from connectors.errors import FlowsuiteError

    return (FlowsuiteError, KafkaException, OSError)


def cli_error(exc: BaseException) -> CliError | None:
    """The one line and exit code of an error a command let through, or None (a bug: traceback).

    The line is the error's message, whitespace folded (a spec error keeps its one problem a
    line), with the command-line hint of its kind appended; the exit code is EXIT_TRANSIENT for
    a transient flowsuite error, an int `code` the error carries, else EXIT_ERROR."""
    from connectors.errors import FlowsuiteError

    if not isinstance(exc, _known_errors()):
        return None
    message = str(exc) if hasattr(exc, "problems") else " ".join(str(exc).split())
    hint = cli_hint(exc)
    if hint:
        message = f"{message} ({hint})"
    code = getattr(exc, "code", None)
    if isinstance(exc, FlowsuiteError) and exc.transient:
        code = EXIT_TRANSIENT
    return CliError(message, code if isinstance(code, int) and code else EXIT_ERROR)


def cli_hint(exc: BaseException) -> str | None:
    """What to run about an engine error, in this command line's flags (the engine's own
    messages never name a flag: the CLI adds them here, Dagster and Airflow have their own)."""
    from connectors.flows import OffsetsOfAnotherTopicError
    from connectors.kafka import HistoryLostError
    from connectors.sources.cdc.spec import SnapshotNeededError

    if isinstance(exc, OffsetsOfAnotherTopicError):
        return (f"decide with `flowsuite offsets reset {exc.product} --partition N --to start` "
                "(or `--to end`) for each partition")
    if isinstance(exc, HistoryLostError):
        product = getattr(exc, "product", None) or "<product>"
        return f"`flowsuite offsets reset {product} --partition {exc.partition} --to {exc.reset_to}`"
    if isinstance(exc, SnapshotNeededError):
        return f"`flowsuite cdc reset {exc.source} --yes` drops the slot and the position: the next run takes a new snapshot"
    return None


class RootGroup(click.Group):
    """Turns the known errors of any command into a `CliError` (cli_error: one line, one exit code)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            error = cli_error(exc)
            if error is None:
                raise
            raise error from None


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Kafka topics as data products: hourly Parquet lake and warehouse table."""
    if ctx.obj is None:
        ctx.obj = load_settings()


# --- areas: one line each (other groups, e.g. `flow`, `cdc`, `table`, are added here) -------
cli.add_command(broker.group)
cli.add_command(validate.command)
cli.add_command(produce_demo.command)
cli.add_command(land.command)
cli.add_command(demo.command)
cli.add_command(offsets.group)
cli.add_command(lake.read)
cli.add_command(lake.compact)
cli.add_command(quarantine.group)
cli.add_command(quality.group)
cli.add_command(warehouse.group)
cli.add_command(status.command)
cli.add_command(flow.group)
cli.add_command(table.group)
cli.add_command(cdc.group)
cli.add_command(contract.group)
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`flowsuite …`: run the command and return its exit code (errors print one line)."""
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="flowsuite",
                        standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0
