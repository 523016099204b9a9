"""Any JSON a client sends gets a 400 naming the problem (or is accepted), never a crash:
the validation of a subscription request, fuzzed."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.gateway.service import FlowError, FlowService
from tests.support.gateway import SOURCE, clicks_flow_spec, test_settings

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["source", "types", "config", "filters", "sink", "protocol", "protocolsettings", "id"]

SERVICE = FlowService(SimpleNamespace(metastore=None), [clicks_flow_spec("t")], test_settings(allow_sinks=()), "unused:1")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8) | json_values)
def test_random_requests_get_a_400_or_pass(body):
    try:
        SERVICE.validate("p-001", body)
    except FlowError as exc:
        assert exc.status == 400 and exc.message


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_random_filters_and_config(value):
    for key in ("filters", "config", "protocolsettings", "types"):
        body = {"source": SOURCE, "protocol": "HTTP", "sink": "https://8.8.8.8/h",
                "filters": [{"exact": {"partnerid": "p-001"}}], key: value}
        try:
            SERVICE.validate("p-001", body)
        except FlowError as exc:
            assert exc.status == 400 and exc.message
