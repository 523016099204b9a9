"""`flowsuite`: the command line of the code location.

Each subcommand is one function, registered with `@command`, that receives the parsed
arguments and the settings and returns an exit code. Adding a subcommand is adding a
function here (or in a module imported here):

    @command("land", help="land a data product now", args=[arg("product")])
    def land(args, settings) -> int: ...

Errors a user can fix (a bad spec, a taken port, an unreachable broker) raise `CliError`
or one of the known error types and print as one line on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration.settings import Settings, load_settings


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit code 1 (or `code`)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


Handler = Callable[[argparse.Namespace, Settings], int]


@dataclass
class Command:
    name: str  # "broker start" for a nested subcommand
    help: str
    handler: Handler
    args: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)


COMMANDS: dict[str, Command] = {}


def arg(*flags: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """An argparse argument, declared next to the command that takes it."""
    return flags, kwargs


def command(name: str, help: str, args: Sequence[tuple[tuple[Any, ...], dict[str, Any]]] = ()):
    """Register a subcommand handler; `name` may have two words ('broker start')."""

    def register(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        COMMANDS[name] = Command(name, help, handler, list(args))
        return handler

    return register


def product_spec(settings: Settings, product: str, *, expectations: bool = True):
    """The spec of data product `product`; an unknown name is one line naming the known ones.

    Every subcommand that names a product resolves it here. Those that write data under the
    spec (land, compact, quarantine replay, warehouse sync) also check its expectations as
    `validate` does; those that only look or repair (offsets, read, quarantine list, quality
    blocked/unblock) pass `expectations=False` and skip Great Expectations' ~4 s import, so
    a bad expectation never stands between an operator and an offsets reset.
    """
    from connectors.spec import load_specs

    if expectations:
        from quality.expectations import register_spec_checks

        register_spec_checks()  # expectation types and kwargs are part of a valid spec
    specs = {s.name: s for s in load_specs(settings.products_dir)}
    if product not in specs:
        known = ", ".join(sorted(specs)) or "none"
        raise CliError(f"no data product {product!r} in {settings.products_dir} (known: {known})")
    return specs[product]


def _interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("true", "1")


# --- broker --------------------------------------------------------------------------------


@command(
    "broker start",
    help="start the embedded Kafka-compatible broker (Tansu) in the background",
    args=[
        arg(
            "--port",
            type=int,
            default=None,
            help="port on 127.0.0.1 (default: from FLOWSUITE_KAFKA_BOOTSTRAP, else 9092)",
        ),
        arg(
            "--storage",
            default=None,
            help="storage engine: memory://tansu/ (default) or s3://BUCKET/ (AWS_* from the environment)",
        ),
    ],
)
def broker_start(args: argparse.Namespace, settings: Settings) -> int:
    from orchestration.broker import DEFAULT_PORT, DEFAULT_STORAGE, start_broker

    port = args.port or _bootstrap_port(settings.kafka_bootstrap) or DEFAULT_PORT
    storage = args.storage or os.environ.get("FLOWSUITE_BROKER_STORAGE") or DEFAULT_STORAGE
    status = start_broker(settings.home, port=port, storage=storage)
    print(status.message)
    return 0


@command("broker stop", help="stop the embedded broker (its memory storage is lost)")
def broker_stop(args: argparse.Namespace, settings: Settings) -> int:
    from orchestration.broker import stop_broker

    print(stop_broker(settings.home).message)
    return 0


@command("broker status", help="say whether the embedded broker runs; exit 3 when it does not")
def broker_status(args: argparse.Namespace, settings: Settings) -> int:
    from orchestration.broker import broker_status as status_of

    status = status_of(settings.home)
    print(status.message)
    return 0 if status.running else 3


def _bootstrap_port(bootstrap: str) -> int | None:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return int(port) if host in ("127.0.0.1", "localhost") and port.isdigit() else None


# --- specs ---------------------------------------------------------------------------------


@command(
    "validate",
    help="check every data-product spec; print each problem, exit 1 if any",
    args=[
        arg("--dir", type=Path, default=None, help="specs folder (default: FLOWSUITE_PRODUCTS_DIR)")
    ],
)
def validate(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.spec import SpecError, load_specs
    from quality.expectations import register_spec_checks

    register_spec_checks()  # expectation types and kwargs are part of a valid spec
    products_dir = args.dir or settings.products_dir
    try:
        specs = load_specs(products_dir)
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {products_dir}", file=sys.stderr)
        return 1
    if not specs:
        print(f"no data-product specs (*.yaml) in {products_dir}", file=sys.stderr)
        return 1
    for spec in specs:
        print(f"OK {spec.name}: topic {spec.topic}, {len(spec.fields)} fields, owner {spec.owner}")
    from connectors.source_sql import load_sources

    try:
        sources = load_sources(products_dir, specs)
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {products_dir / 'sources'}", file=sys.stderr)
        return 1
    for source in sources:
        print(f"OK source {source.name}: table {source.table} ({source.mode}) → product {source.product}")
        if source.mode == "cdc":  # against the product and, when it answers, the server
            from connectors.sources.cdc.checks import source_warnings

            for warning in source_warnings(source, next(s for s in specs if s.name == source.product)):
                print(f"WARN source {source.name}: {warning}")
    return 0


# --- demo traffic --------------------------------------------------------------------------


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


@command(
    "produce-demo",
    help="produce realistic click events (some invalid) to the broker",
    args=[
        arg("--events", type=_positive, default=10_000, help="number of events (default 10000)"),
        arg(
            "--hours",
            type=_positive,
            default=3,
            help="spread event times over the last H hours (default 3)",
        ),
        arg(
            "--invalid-rate",
            type=_rate,
            default=0.01,
            help="fraction of invalid records, 0..1 (default 0.01)",
        ),
        arg("--topic", default="clicks", help="topic (default clicks)"),
        arg(
            "--partitions",
            type=_positive,
            default=2,
            help="partitions when the topic is created (default 2)",
        ),
        arg("--seed", type=int, default=None, help="random seed (default: a fresh one each run)"),
    ],
)
def produce_demo(args: argparse.Namespace, settings: Settings) -> int:
    import random

    from connectors.demo_data import generate_clicks, produce

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    _require_broker(settings.kafka_bootstrap)
    records = generate_clicks(args.events, args.hours, args.invalid_rate, seed=seed)
    from orchestration.progress import progress_bar

    with progress_bar(f"producing to {args.topic}", total=args.events) as advance:
        report = produce(
            settings.kafka_bootstrap, args.topic, records, partitions=args.partitions, progress=advance
        )
    partitions = ", ".join(f"p{p}={n}" for p, n in report.per_partition.items())
    print(
        f"produced {report.produced} records to {args.topic} on {settings.kafka_bootstrap} "
        f"({report.valid} valid, {report.invalid} invalid; {partitions}; seed {seed})"
    )
    return 0


def _require_broker(bootstrap: str) -> None:
    from orchestration.broker import broker_answers

    if not broker_answers(bootstrap, timeout=5.0):
        raise CliError(
            f"no Kafka broker answers at {bootstrap}; start one with `flowsuite broker start` "
            "or set FLOWSUITE_KAFKA_BOOTSTRAP"
        )


import orchestration.cli_lake  # noqa: E402, F401 - registers `read` and `compact`
import orchestration.cli_landing  # noqa: E402, F401 - registers `land`, `demo`, `offsets …`
import orchestration.cli_quality  # noqa: E402, F401 - registers `quarantine …` and `quality …`
import orchestration.cli_status  # noqa: E402, F401 - registers `status`
import orchestration.cli_warehouse  # noqa: E402, F401 - registers `warehouse sync` and the demo's warehouse section

# --- entry ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowsuite",
        description="Kafka topics as data products: hourly Parquet lake and warehouse table.",
    )
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for cmd in COMMANDS.values():
        group, _, leaf = cmd.name.partition(" ")
        if leaf:
            if group not in groups:
                group_parser = top.add_parser(group, help=f"{group} commands")
                groups[group] = group_parser.add_subparsers(
                    dest="subcommand", required=True, metavar="ACTION"
                )
            sub = groups[group].add_parser(leaf, help=cmd.help, description=cmd.help)
        else:
            sub = top.add_parser(group, help=cmd.help, description=cmd.help)
        for flags, kwargs in cmd.args:
            sub.add_argument(*flags, **kwargs)
        sub.set_defaults(handler=cmd.handler)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    from confluent_kafka import KafkaException

    from connectors.demo_data import ProduceError
    from connectors.spec import SpecError
    from orchestration.broker import BrokerError

    return (CliError, BrokerError, SpecError, ProduceError, KafkaException, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cdc"]:  # a click group (orchestration/cli_cdc.py) until the CLI moves to click
        from orchestration.cli_cdc import group

        return group.main(args=argv[1:], prog_name="flowsuite cdc", standalone_mode=False) or 0
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, load_settings())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, _known_errors()):
            raise
        message = " ".join(str(exc).split()) if not hasattr(exc, "problems") else str(exc)
        print(f"flowsuite: error: {message}", file=sys.stderr)
        return getattr(exc, "code", 1) if isinstance(getattr(exc, "code", None), int) else 1


if __name__ == "__main__":
    sys.exit(main())
