"""Runs one publish of a query-based source connector in its own process, for the crash test.

    python tests/workers/source_worker.py SOURCE_JSON PRODUCT_JSON SOURCE_URL METASTORE_URL BOOTSTRAP [--lease S]

FLOWSUITE_CRASH_AT=source_after_flush:<n> kills it (SIGKILL) after the n-th batch was
acknowledged by the broker, before its cursor is stored.
"""

from __future__ import annotations

import argparse
import sys

from connectors.flows import RunContext
from connectors.metastore import Metastore
from connectors.sources import SourceSpec, publish
from connectors.spec import DataProductSpec


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("source_json", "product_json", "source_url", "metastore_url", "bootstrap"):
        parser.add_argument(name)
    parser.add_argument("--lease", type=float, default=2.0)
    args = parser.parse_args()
    source = SourceSpec.model_validate_json(args.source_json)
    product = DataProductSpec.model_validate_json(args.product_json)
    run = RunContext(lake=None, metastore=Metastore(args.metastore_url), bootstrap=args.bootstrap, lease_s=args.lease)
    result = publish(source, product, run, source_url=args.source_url)
    print(result.published)
    return 0


if __name__ == "__main__":
    sys.exit(main())
