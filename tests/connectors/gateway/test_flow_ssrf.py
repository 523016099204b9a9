"""Sinks flowsuite refuses, before any connection (DESIGN invariant 6); checked with a guard
that fails on any connection to an address that is not loopback."""

from __future__ import annotations

import ipaddress

import pytest

from connectors.gateway.settings import GatewaySettings, load_gateway_settings
from connectors.gateway.ssrf import SinkRefused, check_sink
from tests.support.gateway import loopback_only

STRICT = GatewaySettings()
TESTING = GatewaySettings(allow_http=True, allow_sinks=(ipaddress.ip_network("127.0.0.1/32"),))


@pytest.mark.parametrize(
    "sink, words",
    [
        ("https://10.0.0.1/hook", "private"),
        ("https://10.255.1.2:8443/hook", "private"),
        ("https://172.16.0.5/hook", "private"),
        ("https://192.168.1.1/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://169.254.1.1/hook", "link-local"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://localhost/hook", "loopback"),  # /etc/hosts, no packet
        ("https://[::1]/hook", "loopback"),
        ("https://[::ffff:10.0.0.1]/hook", "private"),
        ("https://[fd00::1]/hook", "private"),
        ("https://0.0.0.0/hook", "resolves to 0.0.0.0"),
        ("https://100.64.0.1/hook", "not a global"),
        ("http://8.8.8.8/hook", "must be https"),
        ("ftp://8.8.8.8/hook", "not supported"),
        ("https://user:pw@8.8.8.8/hook", "credentials"),
        ("https:///nohost", "no host"),
    ],
)
def test_refused_before_any_connection(sink, words):
    with loopback_only() as attempts:
        with pytest.raises(SinkRefused) as err:
            check_sink(sink, STRICT)
    assert words in str(err.value)
    assert attempts == []


def test_loopback_only_with_the_allow_list():
    with loopback_only() as attempts:
        assert check_sink("http://127.0.0.1:9/hook", TESTING) == ["127.0.0.1"]
        with pytest.raises(SinkRefused):
            check_sink("http://10.0.0.1/hook", TESTING)  # the allow-list is exact
        with pytest.raises(SinkRefused):
            check_sink("http://169.254.169.254/", TESTING)
    assert attempts == []
    assert check_sink("https://8.8.8.8/hook", STRICT) == ["8.8.8.8"]  # a global literal: no lookup


def test_settings_from_the_environment():
    s = load_gateway_settings({"FLOWSUITE_FLOW_ALLOW_SINKS": "127.0.0.1/32, ::1/128", "FLOWSUITE_FLOW_ALLOW_HTTP": "true"})
    assert s.allow_http and len(s.allow_sinks) == 2
    assert not load_gateway_settings({}).allow_http and load_gateway_settings({}).allow_sinks == ()
