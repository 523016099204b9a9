"""The inbound routes of the gateway's Starlette app (connectors/gateway/api.py mounts them):

    OPTIONS /inbound/{product}   the HTTP Webhook handshake (consent only for registered origins)
    POST    /inbound/{product}   CloudEvents in binary, structured or batched mode

The body is read up to the product's `inbound.max_body_bytes` (413 beyond it, before any
verification); the rest is `InboundService` in a worker thread, which waits for the broker.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.gateway.inbound.service import Answer, InboundService

log = logging.getLogger(__name__)


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def _response(answer: Answer) -> Response:
    if answer.status == 200 and not answer.body:  # the handshake: headers only
        return Response(status_code=200, headers=answer.headers)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers or None)


async def inbound(request: Request) -> Response:
    service: InboundService | None = request.app.state.inbound
    product = request.path_params["product"]
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        if service is None:
            return JSONResponse({"error": "this gateway takes no inbound events", "status": 404}, status_code=404)
        if request.method == "OPTIONS":
            return _response(service.handshake(product, headers))
        limit = service.max_body(product)
        if limit is None:
            return _response(service.handshake(product, headers))  # the 404 answer
        try:
            body = await _body(request, limit)
        except _TooLarge:
            return JSONResponse({"error": f"the request body is larger than {limit} bytes (inbound.max_body_bytes "
                                          f"of {product}); send smaller batches", "status": 413}, status_code=413)
        return _response(await run_in_threadpool(service.receive, product, headers, body))
    except Exception:  # the sender gets a clean answer, the log the detail
        log.exception("inbound %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error; the receiving gateway's log has the details", "status": 500},
                            status_code=500)


ROUTES = [Route("/inbound/{product}", inbound, methods=["POST", "OPTIONS"])]
