"""`flowsuite flow ...` (click, tested with CliRunner) and secrets that never reach a log."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from connectors.gateway import Gateway
from connectors.settings import load_settings
from orchestration.cli import main
from orchestration.cli.flow import flow_status, group
from tests.support.gateway import (
    OWNER,
    flow_env,
    produce_clicks,
    wait_for,
)


@pytest.fixture
def flow(tmp_path, kafka_bootstrap, make_topic, monkeypatch):
    topic = make_topic(partitions=2)
    with flow_env(tmp_path, kafka_bootstrap, topic) as f:
        products = tmp_path / "products"
        products.mkdir()
        import yaml

        (products / "clicks.yaml").write_text(yaml.safe_dump(f.spec.model_dump(mode="json")))
        monkeypatch.setenv("FLOWSUITE_PRODUCTS_DIR", str(products))
        # The test's clicks has a few of the real fields; quality/suites/clicks.json names others.
        # The CLI checks expectations (quality/suites/clicks.json names fields this clicks lacks):
        # an empty suites folder, so the test's spec passes them — they are not this test's subject.
        monkeypatch.setattr("quality.expectations.SUITES_DIR", tmp_path / "no-suites")
        monkeypatch.setenv("FLOWSUITE_METASTORE_URL", f.store.metastore.url)
        monkeypatch.setenv("FLOWSUITE_KAFKA_BOOTSTRAP", kafka_bootstrap)
        yield f


def test_a_token_for_an_org_name_too_long_is_the_root_groups_one_line(flow, capsys):
    # The store refuses with an engine error (OrgNameError, terminal), not a bare ValueError's traceback.
    assert main(["flow", "token", "create", "--org", "x" * 129]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "flowsuite: error: an organisation name is 1-128 characters, got 129"


def test_cli_token_list_show_and_decisions(flow, receiver):
    runner = CliRunner()
    invoke = runner.invoke

    def run(args):
        return invoke(group, args, obj=load_settings())

    made = run(["token", "create", "--org", "p-001"])
    assert made.exit_code == 0 and made.output.startswith("fst_")
    assert flow.store.org_of_token(made.output.strip()) == "p-001"
    created = flow.subscribe("p-001", receiver.url)
    listed = run(["list"])
    assert listed.exit_code == 0 and created["id"] in listed.output and "pending_approval" in listed.output
    for action, state in (("approve", "active"), ("pause", "paused"), ("resume", "active"), ("reject", "rejected")):
        out = run([action, created["id"]])
        assert out.exit_code == 0 and out.output.strip().endswith(state), out.output
        if state == "paused":  # what `flowsuite status` shows: state, lag per partition, failures
            (shown,) = flow_status(load_settings())
            assert shown["state"] == "paused" and shown["org"] == "p-001" and set(shown["partitions"]) == {"0", "1"}
            assert all(v["lag"] == 0 for v in shown["partitions"].values())
    again = run(["approve", created["id"]])
    assert again.exit_code == 1 and "cannot approve a subscription that is rejected" in again.output
    shown = run(["show", created["id"]])
    assert shown.exit_code == 0 and '"state": "rejected"' in shown.output
    assert created["webhooksecret"] not in shown.output
    assert run(["show", "nope"]).exit_code == 1
    assert main(["flow", "list"]) == 0  # through the root group (`flowsuite flow list`)


def test_planted_tokens_and_secrets_never_reach_the_logs(flow, receiver, caplog, capfd, kafka_bootstrap):
    caplog.set_level(logging.DEBUG)
    planted_header = "Bearer planted-sink-credential-4f1d"
    planted_query = "planted-access-token-9c2e"
    receiver.respond = lambda _r: (500, {})  # failures get logged: they must not carry secrets
    sink = f"{receiver.url}?access_token={planted_query}"
    created = flow.subscribe("p-001", sink, config={"startfrom": "earliest"},
                             protocolsettings={"headers": {"Authorization": planted_header}})
    with flow.client(OWNER) as c:
        c.post(f"/subscriptions/{created['id']}/approve")
    with flow.api.client("fst_" + "1" * 32 + "_planted-wrong-token") as c:
        assert c.get("/subscriptions").status_code == 401
    produce_clicks(kafka_bootstrap, flow.spec.topic, 4, partners=("p-001",))
    gateway = Gateway(flow.store, [flow.spec], kafka_bootstrap, flow.settings).start()
    try:
        wait_for(lambda: len(receiver.deliveries()) >= 4, what="failing deliveries")
    finally:
        gateway.stop()
    assert receiver.deliveries()[0].headers["authorization"] == planted_header  # it was used
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "retry in" in caplog.text  # the failures were logged
    for secret in (planted_header, planted_query, created["webhooksecret"], flow.tokens["p-001"], flow.owner_token,
                   "planted-wrong-token"):
        assert secret not in logged
    outcome = flow.store.get(created["id"]).last_outcome
    assert planted_query not in outcome and "HTTP 500" in outcome
