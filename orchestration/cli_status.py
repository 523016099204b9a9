"""CLI subcommand `flowsuite status [PRODUCT ...] [--json]`. Registered on import by cli.py."""

from __future__ import annotations

import argparse
import json

from orchestration.cli import CliError, arg, command
from orchestration.settings import Settings


@command(
    "status",
    help="per product: committed vs end offsets, lag, last landing, hours, quarantine, warehouse rows",
    args=[
        arg(
            "products", nargs="*", metavar="PRODUCT", help="only these data products (default: all)"
        ),
        arg(
            "--json",
            action="store_true",
            dest="as_json",
            help="print one JSON document for scripts",
        ),
    ],
)
def status_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.spec import load_specs
    from orchestration.status import collect_status, render_status, status_json

    if args.products:
        known = {s.name for s in load_specs(settings.products_dir)}
        unknown = sorted(set(args.products) - known)
        if unknown:
            raise CliError(
                f"no data product {', '.join(unknown)} in {settings.products_dir} "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )
    statuses = collect_status(settings, args.products or None)
    from orchestration.cli_cdc import (  # change data capture: slots, WAL, lag
        render_rows,
        status_rows,
    )

    cdc = status_rows(settings, args.products or None)
    if args.as_json:
        print(json.dumps({**status_json(statuses), "cdc": cdc}, indent=2))
    else:
        render_status(statuses)
        for line in render_rows(cdc):
            print(line)
    return 0
