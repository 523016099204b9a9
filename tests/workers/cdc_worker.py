"""Runs change data capture in its own process, for the SIGKILL tests.

    python tests/workers/cdc_worker.py SOURCE_JSON PRODUCT_JSON METASTORE_URL BOOTSTRAP [--follow]

With --follow it captures until killed; FLOWSUITE_CRASH_AT=<cdc point>:<n> SIGKILLs it at a
named point (connectors/sources/cdc/stream.py: cdc_snapshot_acked, cdc_after_ack,
cdc_after_record).
"""

from __future__ import annotations

import argparse
import sys

from connectors.flows import RunContext
from connectors.metastore import Metastore
from connectors.sources.cdc import CaptureOptions, capture
from connectors.sources.cdc.spec import CdcSourceSpec
from connectors.spec import DataProductSpec


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("source_json", "product_json", "metastore_url", "bootstrap"):
        parser.add_argument(name)
    parser.add_argument("--follow", action="store_true")
    args = parser.parse_args()
    source = CdcSourceSpec.model_validate_json(args.source_json)
    product = DataProductSpec.model_validate_json(args.product_json)
    print("ready", flush=True)
    run = RunContext(lake=None, metastore=Metastore(args.metastore_url), bootstrap=args.bootstrap)
    result = capture(source, product, run, CaptureOptions(follow=args.follow))
    print(result.events, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
