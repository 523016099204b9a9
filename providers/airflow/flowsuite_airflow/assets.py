"""The `flowsuite` asset URI scheme: `flowsuite://<product>/<asset>`.

Registered through `get_provider_info()["asset-uris"]`, so Airflow normalizes and checks
every `Asset("flowsuite://...")` a DAG declares when it parses the DAG.
"""

from __future__ import annotations

from urllib.parse import SplitResult

from connectors.spec import IDENTIFIER
from flowsuite_airflow.engine import ASSETS


def sanitize_uri(uri: SplitResult) -> SplitResult:
    product, asset = uri.netloc, uri.path.strip("/")
    if not IDENTIFIER.match(product):
        raise ValueError(f"{uri.geturl()}: expected flowsuite://<product>/<asset>, {product!r} is no product name")
    if asset not in ASSETS:
        raise ValueError(f"{uri.geturl()}: the asset must be one of {', '.join(ASSETS)}, not {asset!r}")
    return uri
