"""The Subscriptions API over HTTP: a Starlette app (`flowsuite flow serve` runs it on uvicorn).

CloudEvents Subscriptions API (subscriptions-openapi.yaml): `GET|POST|OPTIONS /subscriptions`
(POST answers 201 with `Location`), `GET|PUT|DELETE|OPTIONS /subscriptions/{id}`. Beyond it:
`GET /products` (discovery), the owner's `POST /subscriptions/{id}/approve|reject|pause|resume`
and the subscriber's `POST /subscriptions/{id}/secret` (rotation: the new `whsec_` secret is in
the answer, the old one keeps signing for `?grace=` seconds, default a day) and
`POST /subscriptions/{id}/replay` (`{"startfrom": ...}`: deliver again from there).
Discovery (public, no token): the xRegistry document (connectors/gateway/xregistry.py) at
`GET /`, `/model`, `/endpoints…`, `/messagegroups…`, `/schemagroups…`; and, with a token,
`GET /products/{name}/contract` (the product's ODCS v3 data contract, JSON or YAML).
Pull delivery (connectors/gateway/pull.py): `POST /subscriptions/{id}:receive` (`maxEvents`,
`maxWaitTime`), `:acknowledge`, `:release` (`releaseDelayInSeconds`), `:reject`, `:renewLock`.
Inbound flow (connectors/gateway/inbound/http.py): `OPTIONS|POST /inbound/{product}`, signed by
Standard Webhooks instead of a bearer token.

Every call but OPTIONS carries `Authorization: Bearer <token>` (401 without a valid one).
Bodies are JSON, at most `max_body_bytes`; every bad request gets a 4xx naming the problem.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.gateway.discovery import products_document
from connectors.gateway.service import FlowError, FlowService
from connectors.gateway.xregistry import Answer, Inline, XRegistry, XRegistryError, document_view

log = logging.getLogger(__name__)


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers or None)


async def _org(request: Request) -> str:
    service: FlowService = request.app.state.service
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise FlowError(401, "Authorization: Bearer <token> is required (a token the gateway's operator issued to your organisation)")
    org = await run_in_threadpool(service.store.org_of_token, token.strip())
    if org is None:
        raise FlowError(401, "the bearer token is not valid")
    return org


async def _json_body(request: Request) -> Any:
    limit = request.app.state.service.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise FlowError(413, f"the request body is larger than {limit} bytes")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise FlowError(415, "the request body must be application/json")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise FlowError(413, f"the request body is larger than {limit} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FlowError(400, f"the request body is not valid JSON: {exc}") from None


def _handler(fn):
    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request, request.app.state.service)
        except FlowError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
            return _error(exc.status, exc.message, **headers)
        except Exception:  # the caller gets a clean answer, the log the detail
            log.exception("flow API: %s %s failed", request.method, request.url.path)
            return _error(500, "internal error; the gateway's log has the details")

    return endpoint


def _sub_json(service: FlowService, sub) -> dict[str, Any]:
    return {**sub.public(), "status": service.status(sub)}


@_handler
async def subscriptions(request: Request, service: FlowService) -> Response:
    if request.method == "OPTIONS":
        return Response(status_code=200, headers={"Allow": "GET,POST,OPTIONS"})
    org = await _org(request)
    if request.method == "GET":
        subs = await run_in_threadpool(service.visible, org)
        return JSONResponse([await run_in_threadpool(_sub_json, service, s) for s in subs])
    body = await _json_body(request)
    sub, secret = await run_in_threadpool(service.create, org, body)
    out = await run_in_threadpool(_sub_json, service, sub)
    out["webhooksecret"] = secret  # Standard Webhooks signing secret: shown once, here
    return JSONResponse(out, status_code=201, headers={"Location": f"/subscriptions/{sub.id}"})


@_handler
async def subscription(request: Request, service: FlowService) -> Response:
    if request.method == "OPTIONS":
        return Response(status_code=200, headers={"Allow": "GET,PUT,DELETE,OPTIONS"})
    org = await _org(request)
    sub_id = request.path_params["id"]
    if request.method == "GET":
        sub = await run_in_threadpool(service.get, org, sub_id)
    elif request.method == "PUT":
        body = await _json_body(request)
        sub = await run_in_threadpool(service.update, org, sub_id, body)
    else:
        sub = await run_in_threadpool(service.delete, org, sub_id)
    return JSONResponse(await run_in_threadpool(_sub_json, service, sub))


@_handler
async def owner_action(request: Request, service: FlowService) -> Response:
    org = await _org(request)
    action = request.path_params["action"]
    if action not in service.OWNER_ACTIONS:
        raise FlowError(404, f"no action {action!r} (approve, reject, pause, resume)")
    sub = await run_in_threadpool(service.owner_action, org, request.path_params["id"], action)
    return JSONResponse(await run_in_threadpool(_sub_json, service, sub))


@_handler
async def rotate_secret(request: Request, service: FlowService) -> Response:
    org = await _org(request)
    try:
        grace = float(request.query_params.get("grace", 86_400))
    except ValueError:
        raise FlowError(400, "grace is a number of seconds") from None
    if not 0 <= grace <= 30 * 86_400:
        raise FlowError(400, "grace is between 0 and 30 days")
    secret = await run_in_threadpool(service.rotate_secret, org, request.path_params["id"], grace)
    return JSONResponse({"webhooksecret": secret, "previousvalidfor": grace})


@_handler
async def replay(request: Request, service: FlowService) -> Response:
    org = await _org(request)
    body = await _json_body(request)
    sub = await run_in_threadpool(service.replay, org, request.path_params["id"], body)
    return JSONResponse(await run_in_threadpool(_sub_json, service, sub))


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise FlowError(400, f"{name} must be an integer from {low} to {high}, got {raw!r}")
    return int(raw)


@_handler
async def pull_action(request: Request, service: FlowService) -> Response:
    """Pull delivery (connectors/gateway/pull.py): `POST /subscriptions/{id}:receive|acknowledge|
    release|reject|renewLock`, Event Grid namespaces' shapes."""
    from connectors.gateway import pull as pull_mod

    org = await _org(request)
    pull = request.app.state.pull
    sub_id, action = request.path_params["id"], request.path_params["action"]
    if action == "receive":
        max_events = _int_param(request, "maxEvents", 1, 1, pull_mod.MAX_EVENTS)
        max_wait = _int_param(request, "maxWaitTime", 0, 0, pull_mod.MAX_WAIT_S)
        deadline = asyncio.get_running_loop().time() + max_wait
        pause = 0.1
        while True:  # long poll: answer as soon as there are events, or at maxWaitTime with none
            items = await run_in_threadpool(pull.receive, org, sub_id, max_events)
            left = deadline - asyncio.get_running_loop().time()
            if items or left <= 0 or await request.is_disconnected():
                return Response(pull_mod.answer_bytes(items), media_type="application/json")
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 1.5, 0.5)  # each look is a Kafka read per partition: fewer while idle
    if action not in pull_mod.ACTIONS:
        raise FlowError(404, f"no action {action!r} (receive, acknowledge, release, reject, renewLock)")
    delay = 0
    if action == "release":
        delay = _int_param(request, "releaseDelayInSeconds", 0, 0, max(pull_mod.RELEASE_DELAYS))
        if delay not in pull_mod.RELEASE_DELAYS:
            raise FlowError(400, f"releaseDelayInSeconds must be one of {', '.join(map(str, pull_mod.RELEASE_DELAYS))}, got {delay}")
    tokens = pull_mod.parse_tokens(await _json_body(request))
    result = await run_in_threadpool(pull.settle, org, sub_id, action, tokens, delay)
    if not result["succeededLockTokens"]:
        first = result["failedLockTokens"][0]
        message = f"no lock token was {action}d: lock token {first['lockToken']!r}: {first['error']['message']}"
        return JSONResponse({"error": message, "status": 400, **result}, status_code=400)
    return JSONResponse(result)


@_handler
async def products(request: Request, service: FlowService) -> Response:
    org = await _org(request)
    base = str(request.base_url).rstrip("/")
    return JSONResponse(products_document(service.products(), base, org))


def _base(request: Request) -> str:
    """The registry's root URL: FLOWSUITE_FLOW_PUBLIC_URL when the app was given one, else
    the URL the request came to."""
    return request.app.state.public_url or str(request.base_url).rstrip("/")


async def xregistry(request: Request) -> Response:
    registry: XRegistry = request.app.state.xregistry
    base = _base(request)
    link = {"Link": f"<{base}/>;rel=xregistry-root"}
    try:
        inline = Inline.parse(request.query_params.getlist("inline"))
        answer = registry.lookup(request.url.path, base, f"{base}/subscriptions", inline)
        if "doc" in request.query_params and answer.document is None and isinstance(answer.body, dict):
            answer = Answer(document_view(answer.body), answer.headers)
    except XRegistryError as exc:
        return JSONResponse(exc.problem(), status_code=exc.status, headers=link,
                            media_type="application/problem+json")
    if answer.document is not None:
        return Response(answer.document, media_type=answer.contenttype, headers={**answer.headers, **link})
    return JSONResponse(answer.body, headers={**answer.headers, **link})


@_handler
async def product_contract(request: Request, service: FlowService) -> Response:
    await _org(request)
    from connectors.contracts.odcs import contract

    name = request.path_params["name"]
    spec = service.specs.get(name)
    if spec is None or not spec.flow.enabled:
        known = ", ".join(s.name for s in service.products()) or "none"
        raise FlowError(404, f"no data product {name!r} offered here (known: {known})")
    fmt = request.query_params.get("format")
    if fmt is None:
        fmt = "yaml" if "yaml" in request.headers.get("accept", "") else "json"
    if fmt not in ("json", "yaml"):
        raise FlowError(400, f"format {fmt!r}: json or yaml")
    doc = contract(spec, **request.app.state.contract_settings)
    if fmt == "yaml":
        import yaml

        return Response(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), media_type="application/yaml")
    return JSONResponse(doc)


def contract_settings(settings: Any) -> dict[str, Any]:
    """The contract's server addresses from flowsuite's settings (connectors/settings.py)."""
    from connectors.tables.iceberg import catalog_url

    return {"kafka_bootstrap": settings.kafka_bootstrap, "lake_url": settings.lake_url,
            "warehouse_url": settings.warehouse_url,
            "iceberg_catalog_url": catalog_url(settings.metastore_url, settings.iceberg_catalog_url)}


def create_app(service: FlowService, inbound=None, settings: Any = None, public_url: str | None = None) -> Starlette:
    """The gateway's app; `inbound` (a connectors.gateway.inbound.InboundService) adds
    `OPTIONS|POST /inbound/{product}` for the products other organisations push to.
    `settings` (connectors.settings.Settings) gives discovery the writer schema files
    (products_dir/schemas) and the contract's servers; `public_url` the registry's root URL."""
    from connectors.gateway.inbound.http import ROUTES as INBOUND_ROUTES
    from connectors.gateway.pull import PullService

    xreg_routes = [Route("/", xregistry, methods=["GET"]), Route("/model", xregistry, methods=["GET"])]
    for group in ("endpoints", "messagegroups", "schemagroups"):
        xreg_routes.append(Route("/" + group + "{rest:path}", xregistry, methods=["GET"]))
    app = Starlette(routes=[
        *INBOUND_ROUTES,
        *xreg_routes,
        Route("/products/{name}/contract", product_contract, methods=["GET"]),
        Route("/subscriptions/{id}:{action}", pull_action, methods=["POST"]),
        Route("/products", products, methods=["GET"]),
        Route("/subscriptions", subscriptions, methods=["GET", "POST", "OPTIONS"]),
        Route("/subscriptions/{id}", subscription, methods=["GET", "PUT", "DELETE", "OPTIONS"]),
        Route("/subscriptions/{id}/secret", rotate_secret, methods=["POST"]),
        Route("/subscriptions/{id}/replay", replay, methods=["POST"]),
        Route("/subscriptions/{id}/{action}", owner_action, methods=["POST"]),
    ])
    app.state.service = service
    app.state.pull = PullService(service)
    app.state.inbound = inbound
    app.state.public_url = public_url.rstrip("/") if public_url else None
    app.state.xregistry = XRegistry(service.products(), settings.products_dir / "schemas" if settings else None)
    app.state.contract_settings = contract_settings(settings) if settings is not None else {}
    return app
