"""Inbound flow as Dagster lineage: the organisations that push a product's events.

For a product with `inbound:` (connectors/gateway/inbound), an external asset `<P>/inbound`
stands for its endpoint `POST /inbound/<P>`: its description and metadata name every sending
organisation with the origins, CloudEvents sources and rate it may send with (never a secret),
and it is drawn as `<P>/landed`'s parent, so a person reading the graph sees where the
product's events come from. The gateway (`flowsuite flow serve`) writes the topic; nothing
materializes this asset in Dagster.
"""

from __future__ import annotations

import dagster as dg

from connectors.spec import DataProductSpec
from orchestration.keys import inbound_key


def senders_text(spec: DataProductSpec) -> str:
    return ", ".join(s.org for s in spec.inbound.senders) if spec.inbound else ""


def build_inbound_definitions(spec: DataProductSpec) -> dg.Definitions:
    if spec.inbound is None:
        return dg.Definitions()
    inbound = spec.inbound
    lines = [f"Signed CloudEvents pushed by {senders_text(spec)} to `POST /inbound/{spec.name}` of this "
             "organisation's flow gateway (Standard Webhooks signatures; acknowledged only once the broker "
             f"has the records), written to topic `{spec.topic}`.", ""]
    for s in inbound.senders:
        rate = f"{s.rate} requests/min" if s.rate else "no rate limit"
        lines.append(f"- **{s.org}**: origin {', '.join(s.origins)}; sources {', '.join(s.sources)}; {rate}")
    metadata: dict[str, object] = {
        "flowsuite/inbound_senders": senders_text(spec),
        "flowsuite/inbound_endpoint": f"/inbound/{spec.name}",
        "flowsuite/topic": spec.topic,
        "flowsuite/inbound_types": ", ".join(inbound.types) or "any",
    }
    for s in inbound.senders:
        metadata[f"flowsuite/inbound/{s.org}"] = dg.MetadataValue.json(
            {"origins": s.origins, "sources": s.sources, "rate_per_min": s.rate})
    asset = dg.AssetSpec(
        key=inbound_key(spec),
        group_name=spec.name,
        owners=[spec.owner],
        kinds={"cloudevents", "http"},
        description="\n".join(lines),
        metadata=metadata,
        tags={"flowsuite/product": spec.name},
    )
    return dg.Definitions(assets=[asset])
