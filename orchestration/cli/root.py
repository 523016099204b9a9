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


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: printed as one line, without a traceback."""
    from confluent_kafka import KafkaException

    from connectors.spec import SpecError
    from examples.demo_data import ProduceError
    from orchestration.services.broker import BrokerError

    return (BrokerError, SpecError, ProduceError, KafkaException, OSError)


class RootGroup(click.Group):
    """Turns the known errors of any command into a `CliError` (same message, same exit code)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if not isinstance(exc, _known_errors()):
                raise
            message = " ".join(str(exc).split()) if not hasattr(exc, "problems") else str(exc)
            code = getattr(exc, "code", None)
            raise CliError(message, code if isinstance(code, int) else 1) from None


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
