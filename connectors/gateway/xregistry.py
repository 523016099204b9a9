"""The gateway's products as an xRegistry (xregistry/spec 1.0-rc4: core, endpoint, message, schema).

A read-only registry rebuilt from the specs when the gateway starts (so `epoch` is 1 and
`createdat`/`modifiedat` are the moment the specs were loaded). Three groups:

- `endpoints/<product>`: `usage: [subscriber]`, `protocol: HTTP` with the Subscriptions API's
  address in `protocoloptions.endpoints`, `envelope: CloudEvents/1.0`, and `messagegroups`
  (the xid of the product's message group).
- `messagegroups/<product>/messages/<type>`: the CloudEvents definition (`envelopemetadata`
  with type, source and dataschema; `dataschemaformat`, `dataschemauri`, `dataschemaxid`).
- `schemagroups/<product>/schemas/<product>`: the product's record as JSON Schema (draft-07),
  one version `1`; for avro/protobuf products with schema files, `schemas/<subject>` holds the
  writer schemas, one version per schema id (`Avro/1.9`, `Protobuf/3`).

HTTP binding: `GET <resource>` answers the schema document itself with `xRegistry-` headers,
`GET <resource>$details` its metadata; `?inline` (`*`, `model`, dotted collection paths) is
supported. Not implemented (docs/flow.md, "Discovery"): writes, `/capabilities`, `/export`,
`?filter`, `?sort`, `?doc`, pagination, `meta` beyond the read-only default-version fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.errors import TerminalError
from connectors.gateway.events import product_source, product_type
from connectors.spec import DataProductSpec

SPECVERSION = "1.0-rc4"
_MODELS = Path(__file__).with_name("xregistry_schemas")
_WRITER_FORMATS = {"avro": ("Avro/1.9", "application/vnd.apache.avro+json"),
                   "protobuf": ("Protobuf/3", "application/x-protobuf")}

_JSON_TYPES = {
    "string": {"type": "string"}, "int32": {"type": "integer"}, "int64": {"type": "integer"},
    "float64": {"type": "number"}, "boolean": {"type": "boolean"},
    "timestamp": {"type": "string", "format": "date-time"}, "date": {"type": "string", "format": "date"},
    "bytes": {"type": "string", "contentEncoding": "base64"},
    "decimal": {"type": ["string", "number"]},  # exact decimal text, or a JSON number
}


class XRegistryError(TerminalError):
    """An xRegistry error (http.md, "Error Processing"): RFC 9457 problem details."""

    def __init__(self, status: int, kind: str, title: str, subject: str = ""):
        self.status, self.kind, self.title, self.subject = status, kind, title, subject
        super().__init__(title)

    def problem(self) -> dict[str, Any]:
        spec = "http.md" if self.kind == "api_not_found" else "spec.md"
        out = {"type": f"https://github.com/xregistry/spec/blob/main/core/{spec}#{self.kind}",
               "title": self.title, "status": self.status}
        if self.subject:
            out["subject"] = self.subject
        return out


def json_schema(spec: DataProductSpec) -> dict[str, Any]:
    """The product's record as a JSON Schema (draft-07): types, descriptions, enums, patterns,
    bounds and required fields of the spec."""
    props = {}
    for f in spec.fields:
        prop = dict(_JSON_TYPES[f.type])
        if f.description:
            prop["description"] = f.description
        if f.enum:
            prop["enum"] = list(f.enum)
        if f.pattern:
            prop["pattern"] = f.pattern
        if f.max_length is not None and f.type == "string":
            prop["maxLength"] = f.max_length
        if f.min is not None:
            prop["minimum"] = f.min
        if f.max is not None:
            prop["maximum"] = f.max
        props[f.name] = prop
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": spec.name, "type": "object",
            "properties": props, "required": [f.name for f in spec.fields if f.required]}


@dataclass
class Node:
    """One entity: its attributes, its child collections (plural → id → Node) and, for a
    Resource or Version with a document, the document's bytes and content type."""

    singular: str
    id: str
    attrs: dict[str, Any]
    collections: dict[str, dict[str, Node]] = field(default_factory=dict)
    document: bytes | None = None
    contenttype: str | None = None
    versions: dict[str, Node] | None = None  # a Resource's versions; the last one is the default


def writer_schema_id(spec: DataProductSpec) -> str:
    assert spec.schemas is not None
    return spec.schemas.subject or f"{spec.name}-value"


class XRegistry:
    """The registry of the flow-enabled products; `schemas_dir` (dataproducts/schemas) is where
    the writer schema files of avro/protobuf products are read from (None: not served)."""

    def __init__(self, specs: list[DataProductSpec], schemas_dir: Path | None = None,
                 loaded_at: datetime | None = None, registry_id: str = "flowsuite"):
        self.specs = sorted((s for s in specs if s.flow.enabled), key=lambda s: s.name)
        self.schemas_dir = schemas_dir
        self.registry_id = registry_id
        self.stamp = (loaded_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._trees: dict[tuple[str, str], dict[str, dict[str, Node]]] = {}  # per root URL: built once

    # --- the model -------------------------------------------------------------------------

    def model(self) -> dict[str, Any]:
        """The domain models of xregistry/spec (endpoint, message, schema model.json, vendored
        in xregistry_schemas/) with the endpoint's messages import dropped (see endpoint())."""
        groups: dict[str, Any] = {}
        for name in ("endpoint", "message", "schema"):
            doc = json.loads((_MODELS / f"{name}-model.json").read_text())
            for plural, group in doc["groups"].items():
                if "$include" in group:
                    continue
                group = {"plural": plural, **group}
                group.pop("ximportresources", None)
                for rplural, res in group.get("resources", {}).items():
                    res.setdefault("plural", rplural)
                groups[plural] = group
        return {"description": "flowsuite data products: endpoints, CloudEvents definitions, schemas",
                "groups": groups}

    # --- the tree --------------------------------------------------------------------------

    def _common(self, **attrs: Any) -> dict[str, Any]:
        return {**attrs, "epoch": 1, "createdat": self.stamp, "modifiedat": self.stamp}

    def tree(self, base: str, subscriptions_url: str) -> dict[str, dict[str, Node]]:
        """The entities (read-only: the specs and schema files as loaded), built once per root URL."""
        key = (base, subscriptions_url)
        if key not in self._trees:
            if len(self._trees) > 16:  # Host headers vary; keep the memory bounded
                self._trees.clear()
            self._trees[key] = self._build(base, subscriptions_url)
        return self._trees[key]

    def _build(self, base: str, subscriptions_url: str) -> dict[str, dict[str, Node]]:
        endpoints, messagegroups, schemagroups = {}, {}, {}
        for spec in self.specs:
            endpoints[spec.name] = self._endpoint(spec, subscriptions_url)
            messagegroups[spec.name] = self._messagegroup(spec, base)
            schemagroups[spec.name] = self._schemagroup(spec)
        return {"endpoints": endpoints, "messagegroups": messagegroups, "schemagroups": schemagroups}

    def _endpoint(self, spec: DataProductSpec, subscriptions_url: str) -> Node:
        return Node("endpoint", spec.name, self._common(
            name=spec.name, description=spec.description.strip(), labels={"owner": spec.owner},
            usage=["subscriber"], envelope="CloudEvents/1.0",
            envelopeoptions={"mode": "binary", "modes": ["binary", "structured", "batched"]},
            protocol="HTTP",
            protocoloptions={"endpoints": [{"uri": subscriptions_url}], "method": "POST",
                             "authorization": [{"type": "Bearer"}],
                             "subscriptionsapi": "CloudEvents Subscriptions API (subscriptions-openapi.yaml)"},
            messagegroups=[f"/messagegroups/{spec.name}"]))

    def _messagegroup(self, spec: DataProductSpec, base: str) -> Node:
        msg_type = product_type(spec)
        schema_xid = f"/schemagroups/{spec.name}/schemas/{spec.name}"
        ext = {attr: {"type": "string", "required": False, "description": f"the record's {fld}"}
               for fld, attr in spec.flow.attributes.items()}
        ext.update({
            "sequence": {"type": "string", "required": True, "description": "Kafka offset, zero-padded to 20 digits"},
            "flowpartition": {"type": "integer", "required": True, "description": "Kafka partition"},
            "partitionkey": {"type": "string", "required": False, "description": "the record's key"},
        })
        message = Node("message", msg_type, self._common(
            name=msg_type, description=f"one record of {spec.name}",
            envelope="CloudEvents/1.0",
            envelopemetadata={
                "specversion": {"type": "string", "value": "1.0", "required": True},
                "id": {"type": "string", "required": True},
                "type": {"type": "string", "value": msg_type, "required": True},
                "source": {"type": "uritemplate", "value": product_source(spec), "required": True},
                "time": {"type": "timestamp", "required": False},
                "dataschema": {"type": "uritemplate", "value": base + schema_xid, "required": False},
                "datacontenttype": {"type": "string", "value": "application/json", "required": False},
                **ext,
            },
            protocol="HTTP",
            dataschemaformat="JsonSchema/draft-07", dataschemauri=base + schema_xid, dataschemaxid=schema_xid,
            datacontenttype="application/json"))
        message.versions = {"1": Node("version", "1", dict(message.attrs))}
        return Node("messagegroup", spec.name, self._common(
            name=spec.name, envelope="CloudEvents/1.0", protocol="HTTP"),
            collections={"messages": {msg_type: message}})

    def _schemagroup(self, spec: DataProductSpec) -> Node:
        doc = json.dumps(json_schema(spec), indent=2).encode()
        schemas = {spec.name: self._schema(spec.name, "JsonSchema/draft-07", "application/json",
                                           {"1": doc}, f"the {spec.name} record as JSON Schema")}
        writers = self._writer_schemas(spec)
        if writers:
            fmt, ctype = _WRITER_FORMATS[spec.format]
            sid = writer_schema_id(spec)
            schemas[sid] = self._schema(sid, fmt, ctype, writers, f"the {spec.format} writer schemas of {spec.name}, "
                                        "one version per schema id")
        return Node("schemagroup", spec.name, self._common(name=spec.name), collections={"schemas": schemas})

    def _writer_schemas(self, spec: DataProductSpec) -> dict[str, bytes]:
        if spec.format not in _WRITER_FORMATS or spec.schemas is None or self.schemas_dir is None:
            return {}
        out = {}
        for sid, name in sorted(spec.schemas.files.items()):
            path = self.schemas_dir / name
            if path.is_file():
                out[str(sid)] = path.read_bytes()
        return out

    def _schema(self, sid: str, fmt: str, ctype: str, docs: dict[str, bytes], description: str) -> Node:
        versions = {}
        ids = sorted(docs, key=int)
        for i, vid in enumerate(ids):
            versions[vid] = Node("version", vid, self._common(
                schemaid=sid, versionid=vid, description=description, isdefault=vid == ids[-1],
                ancestorid=ids[i - 1] if i else vid, contenttype=ctype, format=fmt),
                document=docs[vid], contenttype=ctype)
        default = versions[ids[-1]]
        return Node("schema", sid, dict(default.attrs), document=default.document, contenttype=ctype, versions=versions)

    # --- serialization (API view) and the HTTP paths ----------------------------------------

    def root(self, base: str, subscriptions_url: str, inline: Inline) -> dict[str, Any]:
        tree = self.tree(base, subscriptions_url)
        out: dict[str, Any] = {"specversion": SPECVERSION, "registryid": self.registry_id, "self": base + "/",
                               "xid": "/", **self._common(name="flowsuite",
                               description="the data products of this flowsuite installation")}
        if inline.wants("model"):
            out["model"] = self.model()
        for plural, coll in tree.items():
            out.update(self._collection_attrs(plural, coll, "/", base, inline, ""))
        return out

    def _collection_attrs(self, plural: str, coll: dict[str, Node], parent_xid: str, base: str,
                          inline: Inline, path: str) -> dict[str, Any]:
        prefix = parent_xid.rstrip("/")
        out: dict[str, Any] = {f"{plural}url": f"{base}{prefix}/{plural}", f"{plural}count": len(coll)}
        here = f"{path}.{plural}" if path else plural
        if inline.wants(here):
            out[plural] = {k: self.render(n, f"{prefix}/{plural}/{k}", base, inline, here) for k, n in coll.items()}
        return out

    def render(self, node: Node, xid: str, base: str, inline: Inline, path: str = "",
               resource_singular: str = "") -> dict[str, Any]:
        """One entity in API view; `path` is its dotted collection path below the entity asked
        for (what `?inline` values are matched against)."""
        def deeper(name: str) -> str:
            return f"{path}.{name}" if path else name

        if node.versions is None and node.singular != "version":  # a Group
            out = {f"{node.singular}id": node.id, "self": base + xid, "xid": xid, **node.attrs}
            for plural, coll in node.collections.items():
                out.update(self._collection_attrs(plural, coll, xid, base, inline, path))
            return out
        has_doc = node.document is not None
        singular = resource_singular or node.singular
        if node.singular == "version":
            out = {f"{singular}id": node.attrs.get(f"{singular}id", ""), "versionid": node.id,
                   "self": base + xid + ("$details" if has_doc else ""), "xid": xid}
            out.update({k: v for k, v in node.attrs.items() if k not in out})
            if has_doc and inline.wants(deeper(singular)):
                out.update(_document_attr(singular, node))
            return out
        assert node.versions is not None
        default_id = next(v for v, n in node.versions.items() if n.attrs.get("isdefault", True))
        out = {f"{singular}id": node.id, "versionid": default_id,
               "self": base + xid + ("$details" if has_doc else ""), "xid": xid}
        out.update({k: v for k, v in node.attrs.items() if k not in out and k != f"{singular}id"})
        out["isdefault"] = True
        out.setdefault("ancestorid", default_id)
        if has_doc and inline.wants(deeper(singular)):
            out.update(_document_attr(singular, node))
        out["metaurl"] = f"{base}{xid}/meta"
        if inline.wants(deeper("meta")):
            out["meta"] = self.meta(node, xid, base)
        out["versionsurl"] = f"{base}{xid}/versions"
        out["versionscount"] = len(node.versions)
        if inline.wants(deeper("versions")):
            out["versions"] = {vid: self.render(v, f"{xid}/versions/{vid}", base, inline, deeper("versions"), singular)
                               for vid, v in node.versions.items()}
        return out

    def meta(self, node: Node, xid: str, base: str) -> dict[str, Any]:
        assert node.versions is not None
        default_id = next(v for v, n in node.versions.items() if n.attrs.get("isdefault", True))
        return {f"{node.singular}id": node.id, "self": f"{base}{xid}/meta", "xid": f"{xid}/meta",
                **self._common(), "readonly": True, "compatibility": "none",
                "defaultversionid": default_id, "defaultversionurl": f"{base}{xid}/versions/{default_id}",
                "defaultversionsticky": False}

    def lookup(self, path: str, base: str, subscriptions_url: str, inline: Inline) -> Answer:
        """The answer to `GET <path>` (path below the registry's root, `$details` included)."""
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts:
            return Answer(self.root(base, subscriptions_url, inline))
        if parts == ["model"]:
            return Answer(self.model())
        tree = self.tree(base, subscriptions_url)
        details = parts[-1].endswith("$details")
        if details:
            parts[-1] = parts[-1][: -len("$details")]
        plural = parts[0]
        if plural not in tree:
            raise XRegistryError(404, "api_not_found", f"The specified API is not supported: {path}.", path)
        if details and len(parts) not in (4, 6):
            raise XRegistryError(400, "bad_details", "$details is only valid on a Resource or a Version", path)

        def missing() -> XRegistryError:
            return XRegistryError(404, "not_found", f"The specified entity cannot be found: /{'/'.join(parts)}.",
                                  "/" + "/".join(parts))

        if len(parts) == 1:
            return Answer({k: self.render(n, f"/{plural}/{k}", base, inline) for k, n in tree[plural].items()})
        group = tree[plural].get(parts[1])
        if group is None:
            raise missing()
        gxid = f"/{plural}/{parts[1]}"
        if len(parts) == 2:
            return Answer(self.render(group, gxid, base, inline))
        coll = group.collections.get(parts[2])
        if coll is None:
            raise missing()
        if len(parts) == 3:
            return Answer({k: self.render(n, f"{gxid}/{parts[2]}/{k}", base, inline) for k, n in coll.items()})
        res = coll.get(parts[3])
        if res is None or res.versions is None:
            raise missing()
        rxid = f"{gxid}/{parts[2]}/{parts[3]}"
        if len(parts) == 4:
            if res.document is not None and not details:
                return self._document_answer(res, rxid, base, resource=True)
            return Answer(self.render(res, rxid, base, inline),
                          {"Content-Location": f"{base}{rxid}/versions/{self.meta(res, rxid, base)['defaultversionid']}"})
        if len(parts) == 5 and parts[4] == "meta":
            return Answer(self.meta(res, rxid, base))
        if parts[4] != "versions":
            raise missing()
        if len(parts) == 5:
            return Answer({vid: self.render(v, f"{rxid}/versions/{vid}", base, inline, "", res.singular)
                           for vid, v in res.versions.items()})
        version = res.versions.get(parts[5]) if len(parts) == 6 else None
        if version is None:
            raise missing()
        vxid = f"{rxid}/versions/{parts[5]}"
        if version.document is not None and not details:
            return self._document_answer(version, vxid, base, resource=False, singular=res.singular)
        return Answer(self.render(version, vxid, base, inline, "", res.singular))

    def _document_answer(self, node: Node, xid: str, base: str, *, resource: bool, singular: str = "") -> Answer:
        """A Resource's (or Version's) document, its scalar attributes as `xRegistry-` headers."""
        singular = singular or node.singular
        meta = self.render(node, xid, base, Inline(), resource_singular=singular)
        headers = {f"xRegistry-{k}": _header_value(v) for k, v in meta.items()
                   if isinstance(v, str | int | bool) and k not in (singular, f"{singular}base64", "contenttype")}
        for k, v in (meta.get("labels") or {}).items():
            headers[f"xRegistry-labels.{k}"] = v
        headers["Content-Disposition"] = f"{node.id if resource else node.attrs.get(f'{singular}id', node.id)}"
        if resource:
            headers["Content-Location"] = f"{base}{xid}/versions/{meta['versionid']}"
        return Answer(None, headers, node.document, node.contenttype)


_RESOURCE_KEEP = ("self", "xid", "metaurl", "meta", "versionsurl", "versionscount", "versions")


def document_view(doc: dict[str, Any], pointer: str = "") -> dict[str, Any]:
    """The `?doc` form (core spec, "Doc Flag") of an API-view answer: `self` as `#<JSON pointer>`,
    inlined collections without their `url`/`count`, Resources without their default Version's
    attributes (their `versions` hold them)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict) and f"{key}url" in doc and key not in ("meta",):
            out[key] = {k: document_view(v, f"{pointer}/{key}/{k}") if isinstance(v, dict) else v
                        for k, v in value.items()}
        elif key == "meta" and isinstance(value, dict):
            out[key] = {**value, "self": f"#{pointer}/meta"}
        else:
            out[key] = value
    for key in list(out):
        if key.endswith("url") and key[:-3] in out and isinstance(out[key[:-3]], dict):
            out.pop(key)
            out.pop(f"{key[:-3]}count", None)
    if "xid" in out:
        out["self"] = f"#{pointer}" if pointer else "#/"
    if "versions" in out and "versionid" in out:  # a Resource with its Versions inlined
        rid = next(k for k in out if k.endswith("id") and k not in ("versionid", "xid", "ancestorid"))
        out = {k: v for k, v in out.items() if k == rid or k in _RESOURCE_KEEP}
    return out


def _header_value(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _document_attr(singular: str, node: Node) -> dict[str, Any]:
    assert node.document is not None
    if (node.contenttype or "").endswith("json"):
        return {singular: json.loads(node.document)}
    import base64

    return {f"{singular}base64": base64.b64encode(node.document).decode()}


@dataclass(frozen=True)
class Answer:
    """A JSON body (`body`) or a document (`document`, `contenttype`), with headers."""

    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    document: bytes | None = None
    contenttype: str | None = None


@dataclass(frozen=True)
class Inline:
    """The `?inline` paths, relative to the entity asked for (`*`: everything below, except
    `model`; `x.*`: everything below x; `x.y`: x and its y collections)."""

    paths: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, values: list[str]) -> Inline:
        paths = set()
        for value in values:
            for p in value.split(","):
                p = p.strip() or "*"
                if "*" in p and p != "*" and not (p.endswith(".*") and "*" not in p[:-2]):
                    raise XRegistryError(400, "bad_inline", f"An unknown or non-inlineable attribute was "
                                         f"specified in the inline flag: {p}. (* only as the last part)", p)
                paths.add(p)
        return cls(frozenset(paths))

    def wants(self, path: str) -> bool:
        for p in self.paths:
            if p == "*":
                if path not in ("model", "capabilities", "modelsource"):
                    return True
            elif p.endswith(".*"):
                prefix = p[:-2]
                if path == prefix or path.startswith(prefix + ".") or prefix.startswith(path + "."):
                    return True
            elif p == path or p.startswith(path + "."):
                return True
        return False
