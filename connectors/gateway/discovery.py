"""`GET /products`: the products that allow subscriptions, as xRegistry-style endpoints.

The standard form is the xRegistry document (connectors/gateway/xregistry.py: `GET /`,
`/endpoints`, `/messagegroups`, `/schemagroups`); each endpoint here links to it (`xregistry`).

Shaped after the xRegistry endpoint model (`usage: subscriber`, a `config` with the protocol
and the Subscriptions API's address, `envelope: CloudEvents/1.0` with its modes) with the
messages each product emits (CloudEvents `source` and `type`, the data's JSON Schema built
from the product's spec) and its policy (the filters a subscription must carry).
"""

from __future__ import annotations

from typing import Any

from connectors.gateway.events import product_source, product_type
from connectors.gateway.filters import SUPPORTED
from connectors.gateway.policy import required_filters
from connectors.gateway.xregistry import json_schema
from connectors.spec import DataProductSpec

__all__ = ["endpoint", "json_schema", "products_document"]

def endpoint(spec: DataProductSpec, base_url: str, org: str) -> dict[str, Any]:
    msg_type = product_type(spec)
    return {
        "endpointid": spec.name,
        "xregistry": f"{base_url}/endpoints/{spec.name}",
        "contract": f"{base_url}/products/{spec.name}/contract",
        "name": spec.name,
        "description": spec.description.strip(),
        "owner": spec.owner,
        "usage": ["subscriber"],
        "config": {"protocol": "HTTP", "endpoints": [{"uri": f"{base_url}/subscriptions"}]},
        "envelope": "CloudEvents/1.0",
        "envelopeoptions": {"mode": "binary", "modes": ["binary", "structured", "batched"]},
        "subscriptionconfig": {
            "startfrom": "latest | earliest | {partition: offset} | ISO-8601 time",
            "ordered": "true (one request in flight per partition) | false",
            "mode": "binary | structured | batched", "maxbatch": "1-1000", "maxinflight": "1-64",
            "ttl": "how long an event is retried before the dead letter, e.g. 1h",
        },
        "filterdialects": list(SUPPORTED),
        "requiredfilters": required_filters(spec, org),
        "autoapproved": org in spec.flow.auto_approve,
        "messages": {
            msg_type: {
                "envelopemetadata": {"specversion": "1.0", "source": product_source(spec), "type": msg_type},
                "extensionattributes": {**dict(spec.flow.attributes.items()),
                                        "sequence": "offset, zero-padded to 20 digits",
                                        "flowpartition": "Kafka partition", "partitionkey": "record key"},
                "dataschemaformat": "JsonSchema/draft-07",
                "dataschema": json_schema(spec),
            }
        },
    }


def products_document(specs: list[DataProductSpec], base_url: str, org: str) -> dict[str, Any]:
    return {"endpoints": {s.name: endpoint(s, base_url, org) for s in specs if s.flow.enabled}}
