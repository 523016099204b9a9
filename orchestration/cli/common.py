"""What every `flowsuite` command shares: the error a user can fix, the product lookup, the
settings handed down by the root group, and whether the terminal is interactive."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from connectors.engine import Engine
from connectors.settings import Settings


class CliError(click.ClickException):
    """A problem the user can fix; printed as one line `flowsuite: error: …`, exit code 1 (or `code`)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code
        self.exit_code = code

    def show(self, file: Any = None) -> None:
        click.echo(f"flowsuite: error: {self.format_message()}", file=file or sys.stderr)


def pass_settings(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The command receives the root group's `Settings` as its first argument."""
    return click.pass_obj(fn)


def exit_with(code: int) -> None:
    """End the command with exit code `code` (non-zero without an error message)."""
    if code:
        click.get_current_context().exit(code)


def _spec_checks() -> list:
    from quality.expectations import spec_checks

    return spec_checks()  # expectation types and kwargs are part of a valid spec


_ENGINES: dict[int, tuple[Settings, Engine]] = {}


def engine(settings: Settings) -> Engine:
    """The engine of these settings (connectors/engine.py): the lake with the settings' S3
    options, the shared metastore, the Kafka configuration, the specs. One per settings object."""
    held = _ENGINES.get(id(settings))
    if held is None or held[0] is not settings:
        settings.home.mkdir(parents=True, exist_ok=True)  # the default SQLite files live there
        held = _ENGINES[id(settings)] = (settings, Engine.from_settings(settings, spec_checks=_spec_checks))
    return held[1]


def product_spec(settings: Settings, product: str, *, expectations: bool = True):
    """The spec of data product `product`; an unknown name is one line naming the known ones.

    Every subcommand that names a product resolves it here. Those that write data under the
    spec (land, compact, quarantine replay, warehouse sync) also check its expectations as
    `validate` does; those that only look or repair (offsets, read, quarantine list, quality
    blocked/unblock) pass `expectations=False` and skip Great Expectations' ~4 s import, so
    a bad expectation never stands between an operator and an offsets reset.
    """
    return engine(settings).spec(product, checks=expectations)


def interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("true", "1")


def bootstrap_port(bootstrap: str) -> int | None:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return int(port) if host in ("127.0.0.1", "localhost") and port.isdigit() else None


def require_broker(bootstrap: str) -> None:
    from orchestration.services.broker import broker_answers

    if not broker_answers(bootstrap, timeout=5.0):
        raise CliError(
            f"no Kafka broker answers at {bootstrap}; start one with `flowsuite broker start` "
            "or set FLOWSUITE_KAFKA_BOOTSTRAP"
        )


def product_argument(**kwargs: Any):
    return click.argument("product", **kwargs)
