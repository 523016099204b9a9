"""Discovery by the standards over real HTTP (uvicorn on loopback): the xRegistry document
(xregistry/spec 1.0-rc4) at its paths, validated against the spec's vendored document schemas,
every link in it resolving; and each product's ODCS contract at /products/<name>/contract."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from connectors.contracts.odcs import validate
from connectors.gateway import FlowService, GatewayStore
from connectors.gateway.xregistry import SPECVERSION
from connectors.metastore import Metastore
from connectors.settings import REPO_ROOT, load_settings
from connectors.spec import load_specs
from tests.support.gateway import ApiServer, test_settings

XREG_SCHEMAS = REPO_ROOT / "connectors" / "gateway" / "xregistry_schemas"
SCHEMAS_DIR = REPO_ROOT / "dataproducts" / "schemas"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """The repository's products, every one offered for flow (so avro, protobuf and
    CloudEvents products are all in the registry), behind the real app."""
    tmp = tmp_path_factory.mktemp("discovery")
    specs = [s.model_copy(update={"flow": s.flow.model_copy(update={"enabled": True})})
             for s in load_specs(REPO_ROOT / "dataproducts")]
    clicks = load_specs(REPO_ROOT / "dataproducts")[0]
    specs.append(clicks.model_copy(update={"name": "hidden", "topic": "hidden",
                                           "flow": clicks.flow.model_copy(update={"enabled": False})}))
    settings = load_settings({"FLOWSUITE_HOME": str(tmp), "FLOWSUITE_LAKE_URL": "s3://lake-bucket/lake",
                              "FLOWSUITE_WAREHOUSE_URL": "postgresql+psycopg://u:secret@db.internal:5433/wh"})
    metastore = Metastore(f"sqlite:///{tmp / 'metastore.db'}")
    store = GatewayStore(metastore)
    service = FlowService(store, specs, test_settings(), "127.0.0.1:9")
    api = ApiServer(service, settings=settings)
    token = store.create_token("p-001")
    try:
        yield api, token, specs[:-1]
    finally:
        api.stop()
        metastore.dispose()


def get(api, path, **kw):
    with api.client(None) as c:
        return c.get(path, **kw)


def test_registry_root_lists_the_groups_with_counts_and_urls(gateway):
    api, _, specs = gateway
    resp = get(api, "/")
    assert resp.status_code == 200, resp.text
    root = resp.json()
    assert root["specversion"] == SPECVERSION == "1.0-rc4"
    assert root["registryid"] == "flowsuite" and root["xid"] == "/" and root["self"] == f"{api.url}/"
    assert resp.headers["link"] == f"<{api.url}/>;rel=xregistry-root"
    for group in ("endpoints", "messagegroups", "schemagroups"):
        assert root[f"{group}count"] == len(specs)
        assert root[f"{group}url"] == f"{api.url}/{group}"
        listed = get(api, f"/{group}").json()
        assert sorted(listed) == sorted(s.name for s in specs)  # a product without flow is not listed
    assert "hidden" not in get(api, "/endpoints").json()
    for key in ("epoch", "createdat", "modifiedat"):
        assert key in root


def test_model_has_the_three_domain_groups(gateway):
    api, _, _ = gateway
    model = get(api, "/model").json()
    groups = model["groups"]
    assert groups["endpoints"]["singular"] == "endpoint"
    assert groups["messagegroups"]["resources"]["messages"]["hasdocument"] is False
    assert groups["schemagroups"]["resources"]["schemas"]["singular"] == "schema"
    assert "model" not in get(api, "/").json()
    assert get(api, "/?inline=model").json()["model"] == model


def test_endpoint_says_how_to_subscribe(gateway):
    api, _, _ = gateway
    ep = get(api, "/endpoints/clicks").json()
    assert ep["endpointid"] == "clicks" and ep["xid"] == "/endpoints/clicks"
    assert ep["self"] == f"{api.url}/endpoints/clicks"
    assert ep["usage"] == ["subscriber"] and ep["protocol"] == "HTTP" and ep["envelope"] == "CloudEvents/1.0"
    assert ep["protocoloptions"]["endpoints"][0]["uri"] == f"{api.url}/subscriptions"
    assert ep["labels"]["owner"] == "team:ads"
    for xid in ep["messagegroups"]:  # xids within this registry
        assert get(api, xid).status_code == 200


def test_message_definition_is_the_cloudevent_the_push_engine_sends(gateway):
    api, _, _ = gateway
    group = get(api, "/messagegroups/clicks?inline=messages").json()
    assert group["messagescount"] == 1 and list(group["messages"]) == ["com.flowsuite.clicks.event"]
    msg = get(api, "/messagegroups/clicks/messages/com.flowsuite.clicks.event").json()
    meta = msg["envelopemetadata"]
    assert msg["envelope"] == "CloudEvents/1.0"
    assert meta["type"]["value"] == "com.flowsuite.clicks.event"
    assert meta["source"]["value"] == "/flowsuite/products/clicks"
    assert meta["dataschema"]["value"] == f"{api.url}/schemagroups/clicks/schemas/clicks"
    assert meta["partnerid"]["type"] == "string"  # the product's filterable extension attribute
    assert msg["dataschemaformat"] == "JsonSchema/draft-07"
    assert msg["dataschemauri"] == meta["dataschema"]["value"]
    assert msg["self"] == f"{api.url}/messagegroups/clicks/messages/com.flowsuite.clicks.event"  # no document
    # The dataschema URL resolves to the record's JSON Schema: a good record passes, a bad one not.
    resp = get(api, msg["dataschemauri"].removeprefix(api.url))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    assert resp.headers["xregistry-format"] == "JsonSchema/draft-07"
    assert resp.headers["xregistry-schemaid"] == "clicks" and resp.headers["xregistry-versionid"] == "1"
    schema = resp.json()
    good = {"event_id": "e1", "user_id": "u1", "partner_id": "p-001", "ad_id": "a", "kind": "click",
            "cost_micros": 5, "event_time": "2026-11-30T08:00:00Z"}
    jsonschema.validate(good, schema)
    for bad in ({**good, "partner_id": "x"}, {**good, "kind": "view"}, {k: v for k, v in good.items() if k != "user_id"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_schema_versions_and_details(gateway):
    api, _, _ = gateway
    details = get(api, "/schemagroups/clicks/schemas/clicks$details").json()
    assert details["schemaid"] == "clicks" and details["versionid"] == "1" and details["isdefault"] is True
    assert details["self"] == f"{api.url}/schemagroups/clicks/schemas/clicks$details"
    assert details["format"] == "JsonSchema/draft-07" and "schema" not in details
    assert get(api, "/schemagroups/clicks/schemas/clicks$details?inline=schema").json()["schema"]["title"] == "clicks"
    assert get(api, details["metaurl"].removeprefix(api.url)).json()["defaultversionid"] == "1"
    v1 = get(api, "/schemagroups/clicks/schemas/clicks/versions/1")
    assert v1.json() == get(api, "/schemagroups/clicks/schemas/clicks").json()
    assert get(api, "/schemagroups/clicks/schemas/clicks/versions/1$details").json()["versionid"] == "1"


@pytest.mark.parametrize("product, fmt, files", [
    ("clicks_avro", "Avro/1.9", ["clicks-v1.avsc", "clicks-v2.avsc", "clicks-v3.avsc"]),
    ("clicks_proto", "Protobuf/3", ["clicks-v1.proto", "clicks-v2.proto", "clicks-v3.proto"]),
])
def test_writer_schemas_are_further_schemas_one_version_per_schema_id(gateway, product, fmt, files):
    api, _, _ = gateway
    schemas = get(api, f"/schemagroups/{product}?inline=schemas").json()["schemas"]
    assert sorted(schemas) == sorted([product, f"{product}-value"])
    writer = schemas[f"{product}-value"]
    assert writer["format"] == fmt and writer["versionscount"] == 3 and writer["versionid"] == "3"
    versions = get(api, f"/schemagroups/{product}/schemas/{product}-value/versions").json()
    assert sorted(versions) == ["1", "2", "3"]
    assert [versions[v]["isdefault"] for v in ("1", "2", "3")] == [False, False, True]
    for vid, name in zip(("1", "2", "3"), files, strict=True):
        resp = get(api, f"/schemagroups/{product}/schemas/{product}-value/versions/{vid}")
        assert resp.status_code == 200 and resp.content == (SCHEMAS_DIR / name).read_bytes()
        assert resp.headers["xregistry-format"] == fmt


def test_the_inlined_document_validates_against_the_specs_document_schemas(gateway):
    api, _, specs = gateway
    doc = get(api, "/?inline=*&doc").json()
    assert set(doc["endpoints"]) == {s.name for s in specs}
    for name in ("endpoint", "schema"):
        schema = json.loads((XREG_SCHEMAS / f"{name}-document-schema.json").read_text())
        errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
        assert errors == [], errors
    assert doc["schemagroups"]["clicks"]["self"] == "#/schemagroups/clicks"


def test_every_self_link_of_the_api_view_resolves(gateway):
    api, _, _ = gateway
    doc = get(api, "/?inline=*").json()
    links = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("self", "metaurl", "versionsurl", "defaultversionurl") or key.endswith("surl"):
                    if isinstance(value, str) and value.startswith(api.url):
                        links.append(value)
                walk(value)

    walk(doc)
    assert len(links) > 50
    for url in sorted(set(links)):
        resp = get(api, url.removeprefix(api.url))
        assert resp.status_code == 200, (url, resp.text)
        body = resp.json() if "json" in resp.headers.get("content-type", "") else None
        if url.endswith("$details") or "/meta" in url[-5:]:
            assert body["self"] == url


def test_unknown_paths_are_problem_details(gateway):
    api, _, _ = gateway
    for path in ("/endpoints/nope", "/schemagroups/clicks/schemas/nope", "/schemagroups/clicks/schemas/clicks/versions/9",
                 "/endpoints/hidden"):
        resp = get(api, path)
        assert resp.status_code == 404, path
        assert resp.json()["type"].endswith("#not_found") and resp.headers["content-type"].startswith("application/problem+json")
    assert get(api, "/endpoints/clicks$details").json()["type"].endswith("#bad_details")
    assert get(api, "/?inline=end*").status_code == 400


def test_products_endpoint_still_works_and_points_at_the_standards(gateway):
    api, token, _ = gateway
    with api.client(token) as c:
        clicks = c.get("/products").json()["endpoints"]["clicks"]
    assert get(api, clicks["xregistry"].removeprefix(api.url)).json()["endpointid"] == "clicks"
    assert clicks["contract"] == f"{api.url}/products/clicks/contract"


def test_subscriptionconfig_lists_every_config_key_the_api_takes_with_its_real_bounds(gateway):
    """Pull's `maxdeliverycount` and `lockduration` are there with push's keys, and the range
    discovery states is the one the Subscriptions API enforces."""
    from connectors.gateway.models import CONFIG_KEYS, SubscriptionOptions

    api, token, _ = gateway
    with api.client(token) as c:
        config = c.get("/products").json()["endpoints"]["clicks"]["subscriptionconfig"]
        assert list(config) == list(CONFIG_KEYS)
        assert config["maxdeliverycount"].startswith("1-10 ") and "default 10" in config["maxdeliverycount"]
        assert config["lockduration"].startswith("1-300 ") and config["delivery"].startswith("push ")
        for key, top in (("maxdeliverycount", 10), ("lockduration", 300)):
            body = {"source": "/flowsuite/products/clicks", "protocol": "HTTP",
                    "filters": [{"exact": {"partnerid": "p-001"}}], "config": {"delivery": "pull", key: top + 1}}
            resp = c.post("/subscriptions", json=body)
            assert resp.status_code == 400 and f"config.{key}" in resp.text and f"1 to {top}" in resp.text, resp.text
            accepted = SubscriptionOptions.model_validate({"delivery": "pull", key: top})  # the bound itself is taken
            assert (accepted.max_deliveries, accepted.lock_s)[key == "lockduration"] == top


def test_contract_endpoint_serves_a_valid_odcs_contract_in_json_and_yaml(gateway):
    api, token, specs = gateway
    assert get(api, "/products/clicks/contract").status_code == 401
    with api.client(token) as c:
        for spec in specs:
            doc = c.get(f"/products/{spec.name}/contract").json()
            validate(doc)
            assert doc["name"] == spec.name and doc["apiVersion"] == "v3.1.0"
        as_yaml = c.get("/products/clicks/contract", headers={"Accept": "application/yaml"})
        assert as_yaml.headers["content-type"].startswith("application/yaml")
        assert yaml.safe_load(as_yaml.text) == c.get("/products/clicks/contract").json()
        assert yaml.safe_load(c.get("/products/clicks/contract?format=yaml").text)["kind"] == "DataContract"
        servers = {s["server"]: s for s in c.get("/products/clicks/contract").json()["servers"]}
        assert servers["lake"]["location"] == "s3://lake-bucket/lake/clicks/"
        assert servers["warehouse"] == {**servers["warehouse"], "type": "postgresql", "host": "db.internal", "port": 5433,
                                        "database": "wh"}
        assert "secret" not in json.dumps(servers)  # credentials never leave the gateway
        missing = c.get("/products/nope/contract")
        assert missing.status_code == 404 and "clicks_avro" in missing.json()["error"]
        assert "hidden" not in missing.json()["error"] and c.get("/products/hidden/contract").status_code == 404
        assert c.get("/products/clicks/contract?format=xml").status_code == 400


def test_public_url_is_the_registrys_root(tmp_path):
    metastore = Metastore(f"sqlite:///{tmp_path / 'm.db'}")
    spec = load_specs(REPO_ROOT / "dataproducts")[0]
    service = FlowService(GatewayStore(metastore), [spec], test_settings(), "127.0.0.1:9")
    api = ApiServer(service, public_url="https://flow.example.com/")
    try:
        msg = get(api, f"/messagegroups/{spec.name}/messages/{spec.flow.type}").json()
        assert msg["dataschemauri"] == f"https://flow.example.com/schemagroups/{spec.name}/schemas/{spec.name}"
        assert get(api, "/").json()["self"] == "https://flow.example.com/"
    finally:
        api.stop()
        metastore.dispose()


def test_vendored_files_name_their_source(gateway):
    readme = (XREG_SCHEMAS / "README.md").read_text()
    assert "xregistry/spec" in readme and "Apache" in readme
    assert Path(XREG_SCHEMAS / "endpoint-model.json").is_file()
