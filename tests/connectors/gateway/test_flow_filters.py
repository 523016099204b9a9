"""CloudEvents Subscriptions API filter dialects (spec §3.2.4.1.1), the product policy, and the
signatures a receiver verifies with the `standardwebhooks` reference library."""

from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from connectors.gateway.events import FlowEvent, to_event
from connectors.gateway.feed import EventBatch
from connectors.gateway.filters import FilterError, matches, select, validate_filters
from connectors.gateway.policy import PolicyError, check_subscription, deliverable
from connectors.gateway.signing import webhook_headers
from connectors.gateway.store import new_signing_secret
from tests.support.gateway import SOURCE, TYPE, clicks_flow_spec

EVENT = {"type": "com.github.push", "subject": "https://github.com/cloudevents/spec", "partnerid": "p-001"}


DIALECT_CASES = [
        ({"exact": {"type": "com.github.push"}}, True),
        ({"exact": {"type": "com.github.Push"}}, False),  # case sensitive
        ({"exact": {"type": "com.github.push", "subject": "x"}}, False),  # all must match
        ({"exact": {"missing": "x"}}, False),
        ({"prefix": {"type": "com.github."}}, True),
        ({"prefix": {"type": "org."}}, False),
        ({"suffix": {"subject": "/cloudevents/spec"}}, True),
        ({"suffix": {"subject": "/spec/x"}}, False),
        ({"all": [{"exact": {"type": "com.github.push"}}, {"prefix": {"partnerid": "p-"}}]}, True),
        ({"all": [{"exact": {"type": "com.github.push"}}, {"prefix": {"partnerid": "q-"}}]}, False),
        ({"any": [{"exact": {"type": "nope"}}, {"suffix": {"partnerid": "001"}}]}, True),
        ({"any": [{"exact": {"type": "nope"}}, {"suffix": {"partnerid": "002"}}]}, False),
        ({"not": {"exact": {"type": "com.github.push"}}}, False),
        ({"not": {"exact": {"type": "other"}}}, True),
        ({"not": {"any": [{"exact": {"partnerid": "p-002"}}]}}, True),
]


@pytest.mark.parametrize("flt, expected", DIALECT_CASES)
def test_each_dialect(flt, expected):
    assert matches(validate_filters([flt]), EVENT) is expected


OTHERS = [EVENT, {**EVENT, "partnerid": "p-002"}, {"type": "other"}, {**EVENT, "subject": "x"}, {"partnerid": "q-001"}]


def _batch(attribute_sets):
    return EventBatch(0, 0, len(attribute_sets), [
        FlowEvent(0, i, dict(a), b"{}", None) for i, a in enumerate(attribute_sets)])


@pytest.mark.parametrize("flt", [f for f, _ in DIALECT_CASES])
@pytest.mark.parametrize("also", [None, {"exact": {"partnerid": "p-001"}}, {"prefix": {"type": "com."}}])
def test_a_batch_is_selected_as_each_event_would_be(flt, also):
    """filters.select (a group-by for a top-level exact, masks otherwise) agrees with matches."""
    filters = validate_filters([flt] + ([also] if also else []))
    batch = _batch(OTHERS * 3)
    want = [i for i, e in enumerate(batch.events) if matches(filters, e.attributes)]
    assert select(filters, batch) == want
    assert select(list(reversed(filters)), batch) == want


def test_all_top_level_filters_must_hold():
    assert matches([{"exact": {"type": "com.github.push"}}, {"exact": {"partnerid": "p-001"}}], EVENT)
    assert not matches([{"exact": {"type": "com.github.push"}}, {"exact": {"partnerid": "p-002"}}], EVENT)
    assert matches([], EVENT)  # absence of filters: true


@pytest.mark.parametrize(
    "bad, words",
    [
        ([{"sql": "source LIKE '%x%'"}], "'sql' is not supported"),
        ([{"regex": {"type": ".*"}}], "'regex' is not supported"),
        ([{"exact": {"type": ""}}], "non-empty string"),
        ([{"exact": {"": "x"}}], "non-empty strings"),
        ([{"exact": {}}], "non-empty map"),
        ([{"all": []}], "non-empty array"),
        ([{"any": {"exact": {"a": "b"}}}], "non-empty array"),
        ([{"exact": {"a": "b"}, "prefix": {"a": "b"}}], "exactly one dialect"),
        ([{"not": {"sql": "x"}}], "filters[0].not"),
        ({"exact": {"a": "b"}}, "must be an array"),
        ([{"exact": {"a": 1}}], "non-empty string"),
    ],
)
def test_bad_filters_are_refused_naming_the_place(bad, words):
    with pytest.raises(FilterError) as err:
        validate_filters(bad)
    assert words in str(err.value)


def test_deep_nesting_is_refused_not_a_stack_overflow():
    f: dict = {"exact": {"a": "b"}}
    for _ in range(50):
        f = {"not": f}
    with pytest.raises(FilterError, match="deeper"):
        validate_filters([f])


def test_policy_requires_the_partners_own_id():
    spec = clicks_flow_spec("t")
    ok = {"source": SOURCE, "filters": [{"exact": {"partnerid": "p-001", "kind": "click"}}]}
    check_subscription(spec, "p-001", ok)
    for body in (
        {"source": SOURCE},  # no filter at all
        {"source": SOURCE, "filters": [{"exact": {"partnerid": "p-002"}}]},  # someone else's id
        {"source": SOURCE, "filters": [{"any": [{"exact": {"partnerid": "p-001"}}, {"exact": {"kind": "click"}}]}]},
        {"source": SOURCE, "filters": [{"prefix": {"partnerid": "p-00"}}]},
        {"source": SOURCE, "types": ["com.other"], "filters": [{"exact": {"partnerid": "p-001"}}]},
    ):
        with pytest.raises(PolicyError):
            check_subscription(spec, "p-001", body)
    with pytest.raises(PolicyError, match="does not allow"):
        check_subscription(clicks_flow_spec("t", enabled=False), "p-001", ok)


def test_policy_is_applied_again_to_every_event():
    spec = clicks_flow_spec("t")
    own = to_event(spec, 0, 7, b"e7", b'{"event_id":"e7","partner_id":"p-001","kind":"click","event_time":"2026-11-30T08:00:00Z"}', None)
    other = to_event(spec, 0, 8, b"e8", b'{"event_id":"e8","partner_id":"p-002","kind":"click","event_time":"2026-11-30T08:00:00Z"}', None)
    # a subscription body that (somehow) lacks the required filter still never gets p-002's event
    assert deliverable(spec, "p-001", {"source": SOURCE}, own)
    assert not deliverable(spec, "p-001", {"source": SOURCE}, other)
    assert own.attributes["sequence"] == "00000000000000000007" and own.attributes["type"] == TYPE
    assert own.attributes["partitionkey"] == "e7" and own.attributes["time"] == "2026-11-30T08:00:00Z"
    assert to_event(spec, 0, 9, None, b"not json", None) is None


def test_signatures_verify_with_standardwebhooks_and_survive_rotation():
    old, new = new_signing_secret(), new_signing_secret()
    assert old.startswith("whsec_") and old != new
    body = b'{"a":1}'
    headers = webhook_headers([new, old], "clicks-0-7", body)
    assert Webhook(new).verify(body, headers) == {"a": 1}
    assert Webhook(old).verify(body, headers) == {"a": 1}  # the old secret during the grace
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(b'{"a":2}', headers)  # tampered body
    stale = webhook_headers([new], "clicks-0-7", body, timestamp=int(time.time()) - 600)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body, stale)
    with pytest.raises(ValueError):
        webhook_headers([new], "has.a.dot", body)
