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
    from orchestration.cli_flow import flow_status

    statuses = collect_status(settings, args.products or None)
    flow = [f for f in flow_status(settings) if not args.products or f["product"] in args.products]
    if args.as_json:
        print(json.dumps({**status_json(statuses), "flow_subscriptions": flow}, indent=2))
    else:
        render_status(statuses)
        for f in flow:  # subscriptions of other organisations (flowsuite flow list)
            lag = ", ".join(f"p{p}: {v['lag'] if v['lag'] is not None else '?'}" for p, v in f["partitions"].items())
            print(f"flow {f['product']} → {f['org']} {f['id'][:8]}: {f['state']}, delivered {f['delivered']:,}, "
                  f"failures {f['failures']}, last delivery {f['last_success']}, lag {lag or '-'}"
                  + (f" ({f['last_outcome']})" if f["failures"] else ""))
    return 0
