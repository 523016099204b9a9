"""`GET /products`: the products that allow subscriptions, as xRegistry-style endpoints.

The standard form is the xRegistry document (connectors/gateway/xregistry.py: `GET /`,
`/endpoints`, `/messagegroups`, `/schemagroups`); each endpoint here links to it (`xregistry`).

Shaped after the xRegistry endpoint model (`usage: subscriber`, a `config` with the protocol
and the Subscriptions API's address, `envelope: CloudEvents/1.0` with its modes) with the
messages each product emits (CloudEvents `source` and `type`, the data's JSON Schema built
from the product's spec), its policy (the filters a subscription must carry) and every
`config` key a subscription may set (`subscriptionconfig`, push and pull alike).
"""

from __future__ import annotations

from typing import Any

from connectors.gateway.events import product_source, product_type
from connectors.gateway.filters import SUPPORTED
from connectors.gateway.models import (
    CONFIG_KEYS,
    DEFAULT_BATCH,
    DEFAULT_IN_FLIGHT,
    DEFAULT_LOCK_S,
    DEFAULT_MAX_DELIVERIES,
    MAX_BATCH,
    MAX_DELIVERIES,
    MAX_IN_FLIGHT,
    MAX_LOCK_S,
    MAX_RATE,
    MODES,
)
from connectors.gateway.policy import required_filters
from connectors.gateway.xregistry import json_schema
from connectors.spec import DataProductSpec

__all__ = ["endpoint", "json_schema", "products_document"]

def subscription_config() -> dict[str, str]:
    """Every `config` key the Subscriptions API takes (models.CONFIG_KEYS), with its values and
    default — built from the limits the API enforces, so what discovery says is what is accepted."""
    doc = {
        "delivery": "push (the gateway sends to the sink) | pull (:receive / :acknowledge; no sink)",
        "startfrom": "latest | earliest | {partition: offset} | ISO-8601 time (default latest)",
        "ordered": "true (one request, or for pull one batch, in flight per partition) | false (default true)",
        "mode": f"{' | '.join(MODES)} (push; default binary)",
        "maxbatch": f"1-{MAX_BATCH} (push, batched mode; default {DEFAULT_BATCH})",
        "maxinflight": f"1-{MAX_IN_FLIGHT} (push, ordered false; default {DEFAULT_IN_FLIGHT})",
        "rate": f"1-{MAX_RATE} requests per minute (push; the product's flow.max_rate caps it)",
        "ttl": "how long an event is retried before the dead letter, e.g. 1h (push)",
        "lockduration": f"1-{MAX_LOCK_S} seconds a received event stays locked (pull; default {DEFAULT_LOCK_S})",
        "maxdeliverycount": f"1-{MAX_DELIVERIES} deliveries without acknowledge before the dead letter "
                            f"(pull; default {DEFAULT_MAX_DELIVERIES})",
    }
    return {k: doc[k] for k in CONFIG_KEYS}  # a key the API gained without a line here: KeyError, in the tests


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
        "subscriptionconfig": subscription_config(),
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
