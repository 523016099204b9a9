"""Pieces both source connectors use: the query-based one (connectors/sources/sql.py) and change
data capture (connectors/sources/cdc). They live here because sql.py declares the union of
both declarations (`SourceDeclaration`, told apart by `mode`) and so imports cdc's spec: cdc
cannot import sql.py back without a cycle.

A `${VAR}` of a connection URL that is unset is a configuration error whatever the connector:
both raise the one `UnsetVariableError` (terminal: a retry meets the same environment).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pydantic import field_validator

from connectors.errors import TerminalError
from connectors.settings import load_settings
from connectors.spec import IDENTIFIER, SpecModel

# ${VAR} or ${VAR:-default}; a default may itself hold ${VAR}.
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\$\{[^}]*\})*))?\}")


class UnsetVariableError(TerminalError, RuntimeError):
    """A `${VAR}` without a default names an environment variable that is unset (or empty):
    a configuration error, so terminal — retrying meets the same environment. `variable` is its
    name, `needed_by` what needs it (the connection URL of which source)."""

    def __init__(self, variable: str, needed_by: str):
        self.variable, self.needed_by = variable, needed_by
        super().__init__(f"environment variable {variable} is not set (needed by {needed_by})")


def expand_vars(text: str, env: Mapping[str, str], needed_by: str = "the source connection URL") -> str:
    """`text` with ${VAR} / ${VAR:-default} filled in from `env`; a variable that is unset (or
    empty) and has no default raises UnsetVariableError naming it and `needed_by`."""

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if env.get(name):
            return env[name]
        if default is not None:
            return expand_vars(default, env, needed_by)
        raise UnsetVariableError(name, needed_by)

    return VAR.sub(sub, text)


def resolve_connection_url(url: str, env: Mapping[str, str] | None, needed_by: str = "the source connection URL") -> str:
    """A connection URL with ${VAR} / ${VAR:-default} filled in from `env` (default: the process
    environment); FLOWSUITE_HOME defaults to the settings' home. An unset variable raises
    UnsetVariableError."""
    env = dict(os.environ if env is None else env)
    if "FLOWSUITE_HOME" not in env:
        env["FLOWSUITE_HOME"] = str(load_settings(env).home)
    return expand_vars(url, env, needed_by)


SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def sql_name(v: str | None) -> str | None:
    """A plain SQL identifier (or None), else ValueError."""
    if v is not None and not SQL_NAME.match(v):
        raise ValueError(f"{v!r} is not a plain SQL identifier")
    return v


class SourceSpecModel(SpecModel):
    """The checks both source declarations make alike; declares no fields, so each subclass keeps
    its own fields in its own order."""

    @field_validator("name", "product", check_fields=False)
    @classmethod
    def _ident(cls, v: str) -> str:
        if not IDENTIFIER.match(v):
            raise ValueError(f"{v!r} must match {IDENTIFIER.pattern}")
        return v

    @field_validator("key", mode="before", check_fields=False)
    @classmethod
    def _key_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class Deliveries:
    """Delivery reports of the producer: failures, and acknowledgements per partition."""

    def __init__(self) -> None:
        self.failures: list[Any] = []
        self.delivered: Counter[int] = Counter()

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.delivered[msg.partition()] += 1
        else:
            self.failures.append(err)

    def take(self) -> tuple[list[Any], Counter[int]]:
        out = (self.failures, self.delivered)
        self.failures, self.delivered = [], Counter()
        return out


def idempotent_producer(bootstrap: str, kafka_config: Mapping[str, Any] | None, **settings: Any):
    """(producer, its Deliveries): idempotent, `acks=all`, the Java clients' partitioner; `settings`
    add librdkafka options under their dotted names, e.g. `**{"linger.ms": 10}`."""
    from confluent_kafka import Producer

    delivery = Deliveries()
    producer = Producer({
        **(kafka_config or {}),
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,  # retries never duplicate or reorder within a partition
        "acks": "all",
        **settings,
        "partitioner": "murmur2_random",  # the Java clients' partitioner: a key stays in one partition
        "on_delivery": delivery,
    })
    return producer, delivery


def send(producer, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
    """Produce one message, polling while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:  # the local queue is full: let deliveries drain
            producer.poll(0.05)
