"""Writer schemas of `format: avro|protobuf` products, by the schema id each record carries.

Two sources, one interface (`get(id) -> WriterSchema`), each schema fetched once per id and kept:

- `RegistrySchemas`: a Confluent Schema Registry through confluent-kafka's
  `SchemaRegistryClient` (`GET /schemas/ids/{id}`, references by subject and version), at
  FLOWSUITE_SCHEMA_REGISTRY_URL with its TLS, basic and bearer auth settings passed through
  unchanged, as Kafka's are (`Settings.schema_registry_config`).
- `FileSchemas`: for teams without a registry, the spec's `schemas.files` maps ids to `.avsc`
  or `.proto` files in the schemas folder (`dataproducts/schemas/`).

An id the source does not know, or a registry that cannot be reached, raises
`SchemaUnavailableError`: the landing run stops before it commits anything, and no record is
quarantined for it — the records are fine, the lookup is not.

The Confluent wire format: byte 0 is the magic byte 0, bytes 1-4 the schema id (big-endian),
then, for Protobuf, the message-index array (zig-zag varints: a count, then the indexes; a
lone 0 means the first message), then the payload.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from connectors.errors import TransientError
from connectors.spec import DataProductSpec

MAGIC = 0
HEADER = 5

class SchemaUnavailableError(TransientError, RuntimeError):
    """A writer schema cannot be had (unknown id, registry down): the run must stop, commit nothing."""


@dataclass(frozen=True)
class WriterSchema:
    id: int
    kind: str  # "AVRO" or "PROTOBUF"
    text: str
    name: str = ""  # where it came from, for messages: a file name or "registry id N"
    references: dict[str, str] = field(default_factory=dict)  # protobuf imports: name → text


def registry_config(env: Mapping[str, str] | None = None) -> dict:
    """SchemaRegistryClient settings from the FLOWSUITE_SCHEMA_REGISTRY_* settings
    (connectors/settings.py; `env` for exactly that mapping)."""
    from connectors.settings import load_settings

    return load_settings(env).schema_registry_config()


def schemas_dir(env: Mapping[str, str] | None = None) -> Path:
    """`schemas/` in the data products folder (FLOWSUITE_PRODUCTS_DIR, default dataproducts/)."""
    from connectors.settings import load_settings

    return load_settings(env).products_dir / "schemas"


def schema_source(spec: DataProductSpec, directory: Path | None = None, registry: Mapping | None = None):
    """The product's schema source: its files, or the registry (settings from the environment)."""
    if spec.schemas is None:
        raise ValueError(f"{spec.name}: format {spec.format} needs a `schemas` section")
    if spec.schemas.source == "files":
        return FileSchemas(spec.schemas.files, directory or schemas_dir(), spec.format)
    return RegistrySchemas(dict(registry) if registry is not None else registry_config())


class _Cache:
    def __init__(self) -> None:
        self._schemas: dict[int, WriterSchema] = {}
        self._lock = threading.Lock()

    def get(self, schema_id: int) -> WriterSchema:
        found = self._schemas.get(schema_id)
        if found is None:
            with self._lock:
                found = self._schemas.get(schema_id)
                if found is None:
                    found = self._fetch(schema_id)
                    self._schemas[schema_id] = found
        return found

    def _fetch(self, schema_id: int) -> WriterSchema:  # pragma: no cover - abstract
        raise NotImplementedError


class FileSchemas(_Cache):
    """Schema ids mapped to `.avsc`/`.proto` files; a `.proto` file's imports are read from the
    same folder (google/protobuf/* come with the compiler)."""

    def __init__(self, files: Mapping[int, str], directory: Path, fmt: str = "avro"):
        super().__init__()
        self.files = dict(files)
        self.directory = Path(directory)
        self.kind = "PROTOBUF" if fmt == "protobuf" else "AVRO"

    def _fetch(self, schema_id: int) -> WriterSchema:
        name = self.files.get(schema_id)
        if name is None:
            known = ", ".join(str(i) for i in sorted(self.files)) or "none"
            raise SchemaUnavailableError(
                f"schema id {schema_id} is not mapped to a file in the product's schemas.files "
                f"(mapped ids: {known}); add it, then land again — nothing was committed"
            )
        path = self.directory / name
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaUnavailableError(f"schema id {schema_id}: cannot read {path}: {exc.strerror or exc}") from None
        return WriterSchema(schema_id, self.kind, text, name=name, references=_local_imports(text, self.directory))


def _local_imports(text: str, directory: Path) -> dict[str, str]:
    """Imports of a .proto file found in `directory` (recursively), by import name."""
    import re

    out: dict[str, str] = {}
    todo = re.findall(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', text, re.M)
    while todo:
        name = todo.pop()
        if name in out or name.startswith("google/protobuf/"):
            continue
        path = directory / name
        if path.is_file():
            out[name] = path.read_text(encoding="utf-8")
            todo.extend(re.findall(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', out[name], re.M))
    return out


class RegistrySchemas(_Cache):
    """Schemas from a Confluent Schema Registry, through confluent-kafka's client."""

    def __init__(self, conf: Mapping, client=None):
        super().__init__()
        if client is None and not conf.get("url"):
            raise SchemaUnavailableError(
                "schemas.source is 'registry' but FLOWSUITE_SCHEMA_REGISTRY_URL is not set"
            )
        self.url = _without_userinfo(str(conf.get("url") or "the given client").split(",")[0])
        if client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            client = SchemaRegistryClient(dict(conf))
        self.client = client

    def _fetch(self, schema_id: int) -> WriterSchema:
        schema = self._call(schema_id, lambda: self.client.get_schema(schema_id))
        refs: dict[str, str] = {}
        todo = list(schema.references or [])
        while todo:
            ref = todo.pop()
            if ref.name in refs or ref.name.startswith("google/protobuf/"):
                continue
            registered = self._call(schema_id, lambda r=ref: self.client.get_version(r.subject, r.version))
            refs[ref.name] = registered.schema.schema_str
            todo.extend(registered.schema.references or [])
        kind = (schema.schema_type or "AVRO").upper()
        return WriterSchema(schema_id, kind, schema.schema_str, name=f"registry id {schema_id}", references=refs)

    def _call(self, schema_id: int, fn):
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return fn()
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SchemaUnavailableError(
                    f"schema id {schema_id} is unknown to the Schema Registry at {self.url} "
                    f"({exc.error_message}); nothing was committed"
                ) from None
            raise SchemaUnavailableError(
                f"the Schema Registry at {self.url} answered {exc.http_status_code} for schema id "
                f"{schema_id} ({exc.error_message}); nothing was committed"
            ) from None
        except Exception as exc:  # noqa: BLE001 - httpx's connection errors and timeouts: the registry is down
            raise SchemaUnavailableError(
                f"the Schema Registry at {self.url} cannot be reached for schema id {schema_id} "
                f"({type(exc).__name__}); nothing was committed — land again when it is back"
            ) from None


def _without_userinfo(url: str) -> str:
    """The URL for messages: credentials in it (https://user:secret@host) never reach a log."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def split_header(value: bytes) -> tuple[int | None, str | None]:
    """(schema id, None) for a Confluent-framed value, else (None, reason)."""
    if len(value) < HEADER:
        return None, f"truncated: {len(value)} byte(s), the Confluent wire format needs a 5-byte header"
    if value[0] != MAGIC:
        return None, f"wrong magic byte {value[0]} (the Confluent wire format starts with 0)"
    return int.from_bytes(value[1:5], "big"), None
