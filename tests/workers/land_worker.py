"""Runs one landing in its own process, for the crash tests to SIGKILL.

    python tests/workers/land_worker.py SPEC_JSON LAKE_URL METASTORE_URL BOOTSTRAP
        [--max-records N] [--lease S] [--batch-size N] [--max-buffered-bytes N]

FLOWSUITE_CRASH_AT=<point>[:<n>] in the environment kills it at a named point
(connectors.faults.crash_point); the tests also kill it at random times.
"""

from __future__ import annotations

import argparse
import json
import sys

from connectors.flows import land
from connectors.lake import Lake, S3Options
from connectors.metastore import Metastore
from connectors.settings import load_settings
from connectors.spec import DataProductSpec


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec_json")
    parser.add_argument("lake_url")
    parser.add_argument("metastore_url")
    parser.add_argument("bootstrap")
    parser.add_argument("--max-records", type=int, default=None)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--max-buffered-bytes", type=int, default=None,
                        help="landing's memory bound (tiny: files are finished early and hours continue in new files)")
    args = parser.parse_args()
    if args.max_buffered_bytes is not None:
        from connectors.flows import landing

        landing.MAX_BUFFERED_BYTES = args.max_buffered_bytes
    spec = DataProductSpec.model_validate_json(args.spec_json)
    result = land(
        spec,
        lake=Lake(args.lake_url, S3Options.from_settings(load_settings())),  # as a face builds it
        metastore=Metastore(args.metastore_url),
        bootstrap=args.bootstrap,
        run_id=args.run_id,
        max_records=args.max_records,
        lease_s=args.lease,
        batch_size=args.batch_size,
    )
    print(json.dumps({"consumed": result.consumed, "landed": result.landed, "quarantined": result.quarantined,
                      "skipped": result.skipped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
