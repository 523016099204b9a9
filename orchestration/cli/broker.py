"""`flowsuite broker start|stop|status`: the embedded Kafka-compatible broker (Tansu)."""

from __future__ import annotations

import click

from connectors.settings import Settings
from orchestration.cli.common import bootstrap_port, exit_with, pass_settings


@click.group("broker", help="the embedded Kafka-compatible broker (Tansu)")
def group() -> None:
    pass


@group.command("start", help="start the embedded Kafka-compatible broker (Tansu) in the background")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="port on 127.0.0.1 (default: from FLOWSUITE_KAFKA_BOOTSTRAP, else 9092)")
@click.option("--storage", default=None,
              help="storage engine: memory://tansu/ (default) or s3://BUCKET/ (AWS_* from the environment)")
@pass_settings
def start(settings: Settings, port: int | None, storage: str | None) -> None:
    from orchestration.services.broker import DEFAULT_PORT, DEFAULT_STORAGE, start_broker

    port = port or bootstrap_port(settings.kafka_bootstrap) or DEFAULT_PORT
    storage = storage or settings.broker_storage or DEFAULT_STORAGE
    click.echo(start_broker(settings.home, port=port, storage=storage).message)


@group.command("stop", help="stop the embedded broker (its memory storage is lost)")
@pass_settings
def stop(settings: Settings) -> None:
    from orchestration.services.broker import stop_broker

    click.echo(stop_broker(settings.home).message)


@group.command("status", help="say whether the embedded broker runs; exit 3 when it does not")
@pass_settings
def status(settings: Settings) -> None:
    from orchestration.services.broker import broker_status

    state = broker_status(settings.home)
    click.echo(state.message)
    exit_with(0 if state.running else 3)
