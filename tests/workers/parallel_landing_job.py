"""A reconstructable landing job on the multiprocess executor, for tests/assets/test_parallel_landing.py.

The multiprocess executor rebuilds the job in each step's process by importing this module, so
the job is made from environment variables those processes inherit:
FLOWSUITE_TEST_PARALLEL="<topic> <bootstrap> <lake> <metastore url>".
"""

from __future__ import annotations

import os

import dagster as dg

from assets.landing import build_landing_definitions, landed_key
from connectors.settings import REPO_ROOT
from connectors.spec import parse_spec_file
from orchestration.resources import FlowsuiteResource

ENV = "FLOWSUITE_TEST_PARALLEL"


def parallel_landing_job() -> dg.JobDefinition:
    topic, bootstrap, lake, metastore_url = os.environ[ENV].split(" ")
    spec = parse_spec_file(REPO_ROOT / "dataproducts" / "clicks.yaml").model_copy(update={"topic": topic})
    job = dg.define_asset_job("land_parallel", selection=dg.AssetSelection.assets(landed_key(spec)),
                              executor_def=dg.multiprocess_executor.configured({"max_concurrent": 2}))
    flowsuite = FlowsuiteResource(kafka_bootstrap=bootstrap, lake_url=lake, metastore_url=metastore_url,
                                  warehouse_url=f"sqlite:///{os.path.dirname(lake)}/warehouse.db")
    defs = dg.Definitions(assets=build_landing_definitions(spec).assets, resources={"flowsuite": flowsuite}, jobs=[job])
    return defs.resolve_job_def("land_parallel")
