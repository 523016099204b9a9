"""Inbound flow: another organisation pushes signed CloudEvents to `POST /inbound/<product>`
and they land as the product (docs/flow.md, "Inbound"). Dagster-free, like all of connectors/.

- `events`: an HTTP request as CloudEvents (binary, structured, batched), envelope checks;
- `senders`: who may send, their secrets (from the environment), handshake and rate;
- `log`: the webhook-ids already answered, in the metastore (idempotent retries);
- `producer`: an idempotent producer that says when the broker acknowledged a request's records;
- `service`: one request from bytes to an answer; `http`: its Starlette routes.
"""

from connectors.gateway.inbound.service import Answer, InboundService, InboundSettings

__all__ = ["Answer", "InboundService", "InboundSettings"]
