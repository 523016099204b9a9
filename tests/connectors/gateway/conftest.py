"""Fixtures of the gateway tests, defined in tests/support/gateway.py (test modules do not import each other).

`flow` is a flow service over a two-partition topic; a module that needs another overrides it."""

from __future__ import annotations

import pytest

from tests.support.gateway import broker, flow_env, receiver  # noqa: F401 - fixtures, found here by pytest


@pytest.fixture
def topic2(make_topic):
    return make_topic(partitions=2)


@pytest.fixture
def flow(tmp_path, kafka_bootstrap, topic2):
    with flow_env(tmp_path, kafka_bootstrap, topic2) as f:
        yield f
