"""`flowsuite flow ...`: run the gateway and decide on subscriptions, as the owner (a click group).

    flowsuite flow serve [--host 127.0.0.1] [--port 8787]   the API, inbound and the delivery workers
    flowsuite flow list | show ID                           state, lag per partition, failures
    flowsuite flow approve|reject|pause|resume ID           the owner's decisions
    flowsuite flow token create --org NAME                  a bearer token, printed once

The CLI acts as the operator: it reads the metastore directly and needs no token.
Registered in orchestration/cli/root.py (`cli.add_command(flow.group)`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import click

from connectors.settings import Settings
from orchestration.cli.common import CliError, engine, pass_settings


def _service(settings: Settings):
    from connectors.gateway import FlowService, GatewayStore
    from connectors.gateway.settings import gateway_settings
    flowsuite = engine(settings)
    specs = list(flowsuite.specs(checks=False).values())
    store = GatewayStore(flowsuite.metastore())
    service = FlowService(store, specs, gateway_settings(settings), flowsuite.kafka_bootstrap, flowsuite.kafka())
    service.lake = flowsuite.lake()  # pull serves history below the broker's low watermark from it (S3 options included)
    return service


def subscription_lag(service, sub) -> dict[int, dict[str, Any]]:
    from connectors.gateway.health import partition_lag

    spec = service.specs.get(sub.product)
    return partition_lag(service.store, spec, sub, service.bootstrap, service.kafka_config) if spec is not None else {}


def redact(url: str) -> str:
    """A sink URL with its access_token query value hidden (http-webhook.md §3.2)."""
    import re

    return re.sub(r"(access_token=)[^&#]*", r"\1***", url)


def flow_status(settings: Settings) -> list[dict[str, Any]]:
    """What `flowsuite status` shows of the gateway: every live subscription, with its lag per
    partition, last delivery and failures (empty when no product allows flow)."""
    from connectors.gateway.health import product_health

    service = _service(settings)
    out = []
    for spec in service.products():
        for h in product_health(service.store, spec, service.bootstrap, service.kafka_config):
            if h.sub.state in ("active", "paused", "pending_approval"):
                out.append({"id": h.sub.id, "product": spec.name, **h.metadata(),
                            "last_success": _ago(h.sub.last_success_at)})
    return out


def _ago(ts: float | None) -> str:
    return "never" if ts is None else f"{max(0.0, time.time() - ts):.0f}s ago"


@click.group(name="flow", help="subscriptions of other organisations: serve, list, decide")
def group() -> None:
    pass


@group.command(help="run the Subscriptions API, inbound (POST /inbound/<product>) and the delivery workers")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, type=int)
@click.option("--no-deliver", is_flag=True, help="only the API (delivery runs elsewhere)")
@pass_settings
def serve(settings: Settings, host: str, port: int, no_deliver: bool) -> None:
    import uvicorn

    from connectors.gateway import Gateway
    from connectors.gateway.api import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = _service(settings)
    inbound = _inbound(settings, service)
    gateway = None
    if not no_deliver:
        gateway = Gateway(service.store, list(service.specs.values()), service.bootstrap, service.settings,
                          service.kafka_config, lake=getattr(service, "lake", None)).start()
    products = ", ".join(sorted(inbound.products)) if inbound else "none"
    click.echo(f"flow gateway on http://{host}:{port} (delivery {'off' if no_deliver else 'on'}, origin "
               f"{service.settings.origin}, inbound: {products})", err=True)
    # uvicorn re-raises a captured SIGTERM after its shutdown; with the default handler that ends
    # the process before `finally`, so the claims would wait out their lease. Ours exits through it.
    import signal

    def _exit(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    try:
        app = create_app(service, inbound, settings=settings, public_url=settings.flow_public_url)
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)
    finally:
        if gateway is not None:
            gateway.stop()
        if inbound is not None:
            inbound.close()


def _inbound(settings: Settings, service):
    """The inbound side when a product declares `inbound:`; its senders' secrets come from this
    process's environment (the variables the spec names), its topics are created if missing."""
    import os

    from connectors.gateway.inbound import InboundService

    specs = [s for s in service.specs.values() if s.inbound is not None]
    if not specs:
        return None
    wanted = {v for s in specs for snd in s.inbound.senders for v in (snd.secret_env, snd.previous_secret_env) if v}
    env = {k: v for k, v in os.environ.items() if k in wanted}
    flowsuite = engine(settings)
    inbound = InboundService(specs, env, flowsuite.metastore(), flowsuite.kafka_bootstrap, flowsuite.kafka())
    for warning in inbound.warnings:
        click.echo(f"warning: {warning}", err=True)
    for topic in inbound.ensure_topics():
        click.echo(f"created topic {topic} for inbound events", err=True)
    return inbound


@group.command(name="list", help="every subscription: state, delivered, failures, lag")
@pass_settings
def list_(settings: Settings) -> None:
    service = _service(settings)
    subs = service.store.list()
    if not subs:
        click.echo("no subscriptions")
        return
    click.echo(f"{'id':36}  {'org':10} {'product':10} {'state':16} {'delivered':>9} {'dead':>5} {'fails':>5} {'lag':>7}  last outcome")
    for sub in subs:
        lag = subscription_lag(service, sub) if sub.state in ("active", "paused") else {}
        total = sum(v["lag"] or 0 for v in lag.values()) if lag else None
        click.echo(
            f"{sub.id:36}  {sub.org:10} {sub.product:10} {sub.state:16} {sub.delivered:>9} {sub.dead_lettered:>5} "
            f"{sub.failures:>5} {'' if total is None else total:>7}  {sub.last_outcome or ''}"
        )


def _get(service, sub_id: str):
    sub = service.store.get(sub_id)
    if sub is None:
        raise CliError(f"no subscription {sub_id!r}")
    return sub


@group.command(help="one subscription in full (never its secret)")
@click.argument("sub_id")
@pass_settings
def show(settings: Settings, sub_id: str) -> None:
    service = _service(settings)
    sub = _get(service, sub_id)
    out = {**sub.public(), "sink": redact(sub.body.get("sink") or "(pull)"), "delivered": sub.delivered, "deadlettered": sub.dead_lettered,
           "failures": sub.failures, "lastoutcome": sub.last_outcome, "lastattempt": _ago(sub.last_attempt_at),
           "lastsuccess": _ago(sub.last_success_at), "ratelimit": sub.rate_per_min,
           "partitions": {str(p): v for p, v in subscription_lag(service, sub).items()}}
    click.echo(json.dumps(out, indent=2))


def _decide(action: str):
    @click.argument("sub_id")
    @click.option("--reason", default=None, help="why, recorded with the state")
    @pass_settings
    def decide(settings: Settings, sub_id: str, reason: str | None) -> None:
        from connectors.gateway import FlowError

        service = _service(settings)
        try:
            sub = service.owner_action(None, sub_id, action, reason)
        except FlowError as exc:
            raise CliError(exc.message) from None
        click.echo(f"{sub.id}: {sub.state}")

    decide.__name__ = action
    return group.command(name=action, help=f"{action} a subscription (the owner's decision)")(decide)


for _action in ("approve", "reject", "pause", "resume"):
    _decide(_action)


@group.group(help="bearer tokens of organisations")
def token() -> None:
    pass


@token.command(name="create", help="a new token for an organisation, printed once (only its hash is kept)")
@click.option("--org", required=True, help="the organisation, e.g. p-001, or a product owner such as team:ads")
@pass_settings
def token_create(settings: Settings, org: str) -> None:
    service = _service(settings)
    click.echo(service.store.create_token(org))
