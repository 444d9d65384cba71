"""Generate docs/openapi.json, the OpenAPI 3.1 description of meshgram's REST/JSON API, from the
protos.

Run as `python -m tools.gen_openapi` (part of `make proto` and `make docs`) to rewrite
docs/openapi.json, or with `--check` to exit with status 1 (printing a diff) when it differs from
what would be generated. The edge serves it at /docs/openapi.json, behind the page at /docs.

The document describes what the edge's gRPC-JSON transcoder serves, read from the public protos
with tools/descriptors.py (the same reading as docs/api.md):

- one operation per google.api.http binding, additional bindings included, with the path
  variables as path parameters and the request fields that no binding of the RPC sets as query
  parameters (JSON names, message fields dotted); the edge refuses every query parameter of an
  RPC whose body "*" takes the whole request (envoy/lua/upstream.lua);
- bodies in the proto3 JSON mapping: lowerCamelCase names, 64-bit integers as strings, enums by
  name, bytes in base64, the well-known types in their JSON forms, google.api.HttpBody as raw
  bytes, a stream of messages as a JSON array;
- the proto comments as summaries and descriptions;
- every error an RPC can answer with, as the JSON google.rpc.Status: the codes docs/api.md lists
  for it and the edge's own answers (tools/edge.py, LOCAL_REPLIES);
- a bearer token on every RPC of a service whose comment asks for the "authorization: Bearer"
  header.
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from meshkit.reasons import ERROR_DOMAIN
from tools import generated
from tools.descriptors import (
    ENUM_VALUE,
    FILE_SERVICE,
    HTTP_BODY,
    HTTP_STATUS,
    MESSAGE_FIELD,
    SERVICE_METHOD,
    STATUS_CODES,
    WELL_KNOWN,
    Element,
    Index,
    compile_descriptors,
    errors,
    escape,
    field_behaviors,
    oneof_name,
    sentences_of,
)
from tools.edge import LOCAL_REPLIES, MAX_HEADER_BYTES
from tools.gen_protos import ERROR_PROTOS, PUBLIC_PROTOS
from tools.generated import ROOT
from tools.http_rules import Binding, bindings, bound_fields, openapi_path, path_variables

OPENAPI_DOC = ROOT / "docs" / "openapi.json"
COMMAND = "python -m tools.gen_openapi"
OPENAPI_VERSION = "3.1.0"
# "/" is the edge that serves the document (the page at /docs calls the API it came from).
SERVERS = (
    {"url": "/", "description": "The edge serving this document"},
    {"url": "http://127.0.0.1:8080", "description": "`make run` on this machine"},
)
BEARER = "bearerAuth"

_SCHEMAS = "#/components/schemas/"
_STATUS = "google.rpc.Status"
_ERROR = {"application/json": {"schema": {"$ref": _SCHEMAS + _STATUS}}}
_TYPE_URL = "type.googleapis.com/"
_JSON = "application/json"
_BINARY = {"type": "string", "format": "binary"}
_VERBS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}
_CODE_NAMES = {number: name for name, number in STATUS_CODES.items()}

# Which message types an Any field holds in meshgram's answers; other Any fields accept any.
# The services put ErrorInfo and BadRequest in an error's details (meshkit/grpc_errors.py).
_ANY_MEMBERS = {"google.rpc.Status.details": ("google.rpc.ErrorInfo", "google.rpc.BadRequest")}

# Media types of raw (google.api.HttpBody) bodies by RPC, which the descriptors cannot tell:
# uploads take any content type (the service reads the type from the bytes), downloads answer
# with the image's own.
_RAW_MEDIA_TYPES = {
    "meshgram.storage.v1.StorageService.UploadImage": ("application/octet-stream", "image/*"),
    "meshgram.storage.v1.StorageService.DownloadImage": ("image/*",),
}
_RAW_DEFAULT = ("application/octet-stream",)

# RPCs whose REST answer carries an ETag and honours If-None-Match with 304 (storage_svc sends
# the tag; the edge's answers.lua turns a current copy into 304).
_CONDITIONAL = frozenset({"meshgram.storage.v1.StorageService.DownloadImage"})

# The edge's own answers (tools/edge.py LOCAL_REPLIES gives their code and reason) that a REST
# call can get: (HTTP status, when, only where a JSON body is read).
_EDGE_ANSWERS = (
    (400, "The JSON body cannot be read.", True),
    (
        400,
        "A query parameter is unknown, or would set a field that the path or the body already "
        "sets.",
        False,
    ),
    (413, "The JSON body is larger than 64 KiB.", True),
    (429, "Too many requests; retry later.", False),
    (431, f"The request headers are larger than {MAX_HEADER_BYTES // 1024} KiB.", False),
    (503, "No instance of the service is healthy, or it hung up; retry later.", False),
    (504, "The service did not answer within the route's time limit.", False),
)

_Type = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[int, dict[str, Any]] = {
    _Type.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _Type.TYPE_FLOAT: {"type": "number", "format": "float"},
    _Type.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    _Type.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    _Type.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    _Type.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    _Type.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    _Type.TYPE_INT32: {"type": "integer", "format": "int32"},
    _Type.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _Type.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _Type.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 2**32 - 1},
    _Type.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 2**32 - 1},
    _Type.TYPE_BOOL: {"type": "boolean"},
    _Type.TYPE_STRING: {"type": "string"},
    _Type.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}
# The wrapper types are their value, or null.
_WRAPPERS = {
    "DoubleValue": _Type.TYPE_DOUBLE,
    "FloatValue": _Type.TYPE_FLOAT,
    "Int64Value": _Type.TYPE_INT64,
    "UInt64Value": _Type.TYPE_UINT64,
    "Int32Value": _Type.TYPE_INT32,
    "UInt32Value": _Type.TYPE_UINT32,
    "BoolValue": _Type.TYPE_BOOL,
    "StringValue": _Type.TYPE_STRING,
    "BytesValue": _Type.TYPE_BYTES,
}
# Well-known types whose JSON form is not that of their fields.
_WELL_KNOWN_SCHEMAS: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
        "examples": ["1.5s"],
    },
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.NullValue": {"type": "null"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    **{
        f"google.protobuf.{name}": {**_SCALARS[kind], "type": [_SCALARS[kind]["type"], "null"]}
        for name, kind in _WRAPPERS.items()
    },
}
# The well-known types the transcoder reads from a query parameter like a scalar.
_QUERY_WELL_KNOWN = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    *(f"google.protobuf.{name}" for name in _WRAPPERS),
}


@dataclass
class _Document:
    """The state of one rendering: the component schemas written so far."""

    index: Index
    schemas: dict[str, Any] = field(default_factory=dict)

    def ref(self, element: Element) -> dict[str, Any]:
        """Return a $ref to a message's or enum's component schema, written on first use."""
        name = element.full_name
        if name not in self.schemas:
            self.schemas[name] = {}  # taken before recursing, so recursive messages end
            self.schemas[name] = self.enum(element) if element.enum else self.message(element)
        return {"$ref": _SCHEMAS + name}

    def message(self, element: Element, omit: Collection[str] = ()) -> dict[str, Any]:
        """Return the JSON schema of a message, leaving out the fields named in omit."""
        message = element.message
        assert message is not None
        schema: dict[str, Any] = {"type": "object"}
        description = self.describe(element.public, element.file, element.path)
        if description:
            schema["description"] = description
        properties: dict[str, Any] = {}
        required = []
        for i, item in enumerate(message.field):
            if item.name in omit:
                continue
            properties[item.json_name] = self.field(element, i, item)
            if "REQUIRED" in field_behaviors(item):
                required.append(item.json_name)
        if properties:
            schema["properties"] = properties
        if required:
            schema["required"] = required
        exclusive = [_at_most_one(names) for names in _oneofs(message, omit) if len(names) > 1]
        if exclusive:
            schema["allOf"] = exclusive
        return schema

    def enum(self, element: Element) -> dict[str, Any]:
        """Return the JSON schema of an enum: its value names (numbers are accepted too)."""
        enum = element.enum
        assert enum is not None
        lines = []
        for i, value in enumerate(enum.value):
            said = self.describe(element.public, element.file, (*element.path, ENUM_VALUE, i))
            lines.append(f"- `{value.name}`" + (f": {said}" if said else ""))
        description = self.describe(element.public, element.file, element.path)
        return {
            "type": "string",
            "description": "\n\n".join(filter(None, [description, "\n".join(lines)])),
            "enum": [value.name for value in enum.value],
        }

    def field(
        self, owner: Element, number: int, item: descriptor_pb2.FieldDescriptorProto
    ) -> dict[str, Any]:
        """Return the schema of a message's number-th field, with its comment and behaviours."""
        schema = self.value(item, f"{owner.full_name}.{item.name}")
        notes = [self.describe(owner.public, owner.file, (*owner.path, MESSAGE_FIELD, number))]
        well_known = WELL_KNOWN.get(item.type_name.lstrip("."))
        if well_known is not None:
            notes.append(f"JSON form: {well_known[1]}")
        assert owner.message is not None
        oneof = oneof_name(owner.message, item)
        if oneof is not None:
            notes.append(f"Member of the oneof `{oneof}`.")
        description = " ".join(filter(None, notes))
        if description:
            schema["description"] = description
        behaviors = field_behaviors(item)
        if "OUTPUT_ONLY" in behaviors:
            schema["readOnly"] = True
        if "INPUT_ONLY" in behaviors:
            schema["writeOnly"] = True
        return schema

    def value(self, item: descriptor_pb2.FieldDescriptorProto, name: str) -> dict[str, Any]:
        """Return the schema of a field's JSON value (a map, an array or a single value); name
        is the field's full name."""
        element = self.index.elements.get(item.type_name.lstrip("."))
        if (
            element is not None
            and element.message is not None
            and element.message.options.map_entry
        ):
            key, value = element.message.field
            schema = {"type": "object", "additionalProperties": self.single(value, name)}
            # JSON object keys are strings: integer and bool keys are written as text.
            if key.type == _Type.TYPE_BOOL:
                schema["propertyNames"] = {"enum": ["true", "false"]}
            elif key.type != _Type.TYPE_STRING:
                schema["propertyNames"] = {"pattern": "^-?[0-9]+$"}
            return schema
        if item.label == _Type.LABEL_REPEATED:
            return {"type": "array", "items": self.single(item, name)}
        return self.single(item, name)

    def single(self, item: descriptor_pb2.FieldDescriptorProto, name: str) -> dict[str, Any]:
        """Return the schema of one value of a field, whose full name is name."""
        if item.type not in (_Type.TYPE_MESSAGE, _Type.TYPE_ENUM):
            return dict(_SCALARS[item.type])
        type_name = item.type_name.lstrip(".")
        if name in _ANY_MEMBERS:
            packed = [self.packed(self.index.elements[member]) for member in _ANY_MEMBERS[name]]
            return {"anyOf": [*packed, dict(_WELL_KNOWN_SCHEMAS[type_name])]}
        if type_name in _WELL_KNOWN_SCHEMAS:
            return dict(_WELL_KNOWN_SCHEMAS[type_name])
        return self.ref(self.index.element(item.type_name))

    def packed(self, element: Element) -> dict[str, Any]:
        """Return the schema of a message packed in a google.protobuf.Any: its fields and an
        "@type" naming it."""
        url = {"const": _TYPE_URL + element.full_name}
        return {
            "title": element.full_name.rsplit(".", 1)[-1],
            "allOf": [
                self.ref(element),
                {"type": "object", "properties": {"@type": url}, "required": ["@type"]},
            ],
        }

    def describe(
        self, public: bool, file: descriptor_pb2.FileDescriptorProto, path: tuple[int, ...]
    ) -> str:
        """Return an element's comment as Markdown: meshgram's whole and escaped (it is plain
        text), other packages' first paragraph as written (it is Markdown already)."""
        paragraphs = self.index.paragraphs(file, path)
        if public:
            return "\n\n".join(escape(paragraph) for paragraph in paragraphs)
        return paragraphs[0] if paragraphs else ""


def render(
    descriptors: descriptor_pb2.FileDescriptorSet, public: Sequence[str] = PUBLIC_PROTOS
) -> dict[str, Any]:
    """Return the OpenAPI document of the services in the public files of a descriptor set."""
    index = Index.of(descriptors.file, public)
    files = {file.name: file for file in descriptors.file}
    document = _Document(index)
    tags = []
    paths: dict[str, dict[str, Any]] = {}
    for name in public:
        file = files[name]
        for s, service in enumerate(file.service):
            comment = document.describe(True, file, (FILE_SERVICE, s))
            tags.append({"name": service.name, "description": comment})
            authenticated = index.requires_token(file, s)
            for m, method in enumerate(service.method):
                where = (FILE_SERVICE, s, SERVICE_METHOD, m)
                needs_token = authenticated or index.method_requires_token(file, where)
                for path, verb, operation in _operations(
                    document, file, where, service, method, needs_token
                ):
                    paths.setdefault(path, {})[verb] = operation
    document.ref(index.elements[_STATUS])
    return {
        "openapi": OPENAPI_VERSION,
        "info": _info(),
        "servers": [dict(server) for server in SERVERS],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": dict(sorted(document.schemas.items())),
            "responses": {
                "Error": {
                    "description": (
                        "Any other failure, e.g. `INTERNAL` (HTTP 500) for a defect of the "
                        "server, whose details stay in its logs."
                    ),
                    "content": _ERROR,
                }
            },
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": (
                        "The access token of `AuthService_Login` or `AuthService_RefreshToken` "
                        "(`tokens.accessToken`), sent as `authorization: Bearer <token>`."
                    ),
                }
            },
        },
    }


def generate() -> str:
    """Return what docs/openapi.json should contain."""
    descriptors = compile_descriptors([*PUBLIC_PROTOS, *ERROR_PROTOS])
    return json.dumps(render(descriptors), indent=2, ensure_ascii=False) + "\n"


def check(path: Path = OPENAPI_DOC) -> str:
    """Return a unified diff from path to the generated document; empty when it is up to date."""
    return generated.stale_diff(path, generate())


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite docs/openapi.json, or with --check report whether it is up to date."""
    return generated.main(
        argv,
        path=OPENAPI_DOC,
        generate=generate,
        command=COMMAND,
        description="Generate docs/openapi.json from the protos.",
    )


def _info() -> dict[str, Any]:
    """Return the document's info object; its version is the project's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {
        "title": "meshgram API",
        "summary": "The REST/JSON face of meshgram's public gRPC services.",
        "description": "\n\n".join(
            [
                "Every operation is an RPC of a public gRPC service, transcoded by the Envoy edge "
                "from its `google.api.http` annotation; the same edge serves native gRPC and "
                "gRPC-web on the same port. Generated from the protos by "
                f"`{COMMAND}`.",
                "Bodies follow the proto3 JSON mapping: lowerCamelCase field names (the proto "
                "names are accepted on input), 64-bit integers as strings, enums by name, bytes "
                "in base64, timestamps in RFC 3339 and field masks as one comma-separated string.",
                "A failed call is answered with its HTTP status and a `google.rpc.Status`: the "
                "gRPC `code`, a `message` safe to show, and `details` holding a "
                f"`google.rpc.ErrorInfo` (a stable `reason`, domain `{ERROR_DOMAIN}`) and, for "
                "invalid input, a `google.rpc.BadRequest` naming each offending field.",
                "Operations with a lock need an access token: log in with `AuthService_Login`, "
                "then give `tokens.accessToken` to **Authorize**.",
            ]
        ),
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        "version": str(project["version"]),
    }


def _operations(
    document: _Document,
    file: descriptor_pb2.FileDescriptorProto,
    where: tuple[int, ...],
    service: descriptor_pb2.ServiceDescriptorProto,
    method: descriptor_pb2.MethodDescriptorProto,
    authenticated: bool,
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield (path, verb, operation) for each HTTP binding of an RPC OpenAPI can express."""
    index = document.index
    rule = method.options.Extensions[annotations_pb2.http]
    request = index.element(method.input_type)
    comment = index.paragraphs(file, where)
    full = f"{file.package}.{service.name}"
    # The edge refuses a query parameter for a field that any binding's path or body sets.
    bound = bound_fields(rule)
    for n, binding in enumerate(bindings(rule)):
        if binding.verb not in _VERBS:
            continue
        operation: dict[str, Any] = {
            "tags": [service.name],
            "operationId": f"{service.name}_{method.name}" + (f"_{n + 1}" if n else ""),
        }
        if comment:
            operation["summary"] = sentences_of(comment[0])[0]
        operation["description"] = "\n\n".join(
            [*map(escape, comment), f"gRPC: `/{full}/{method.name}`."]
        )
        parameters = _path_parameters(document, request, binding)
        if bound is not None:
            parameters += _query_parameters(document, request, bound)
        if parameters:
            operation["parameters"] = parameters
        body = _request_body(document, f"{full}.{method.name}", method, request, binding)
        if body is not None:
            operation["requestBody"] = body
        json_body = body is not None and _JSON in body["content"]
        operation["responses"] = {
            "200": _success(document, f"{full}.{method.name}", method, binding),
            **_failures(comment, authenticated, json_body),
            "default": {"$ref": "#/components/responses/Error"},
        }
        if f"{full}.{method.name}" in _CONDITIONAL:
            _conditional(operation)
        if authenticated:
            operation["security"] = [{BEARER: []}]
        yield openapi_path(binding.path), binding.verb.lower(), operation


def _conditional(operation: dict[str, Any]) -> None:
    """Add If-None-Match, the ETag and Cache-Control headers and the 304 answer to an operation
    whose bytes never change under their id."""
    operation.setdefault("parameters", []).append(
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "ETags of copies the client holds; a match answers 304 with no body.",
            "schema": {"type": "string"},
        }
    )
    operation["responses"]["200"]["headers"] = {
        "ETag": {
            "description": "A strong tag: the SHA-256 of the bytes, quoted.",
            "schema": {"type": "string"},
        },
        "Cache-Control": {
            "description": "The bytes never change under this id: cacheable for a year.",
            "schema": {"type": "string"},
        },
    }
    operation["responses"]["304"] = {
        "description": "Not Modified: If-None-Match names the current ETag; no body.",
        "headers": {"ETag": {"schema": {"type": "string"}}},
    }


def _path_parameters(
    document: _Document, request: Element, binding: Binding
) -> list[dict[str, Any]]:
    """Return the path parameters of a binding: one per variable of its template."""
    parameters = []
    for name, pattern in path_variables(binding.path):
        owner, number = _field_at(document.index, request, name)
        note = f"Matches `{pattern}`." if pattern else ""
        parameters.append(_parameter(document, owner, number, name, "path", note))
    return parameters


def _query_parameters(
    document: _Document,
    request: Element,
    bound: Collection[str],
    prefix: str = "",
    seen: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Return the query parameters of the request fields outside bound (top-level proto names):
    scalars, enums and the scalar-like well-known types, by JSON name, fields of messages as
    "message.field"; maps, repeated messages and recursion cannot travel in a query."""
    message = request.message
    assert message is not None
    parameters: list[dict[str, Any]] = []
    for number, item in enumerate(message.field):
        if not prefix and item.name in bound:
            continue
        type_name = item.type_name.lstrip(".")
        if item.type == _Type.TYPE_MESSAGE and type_name not in _QUERY_WELL_KNOWN:
            path = (*seen, request.full_name)
            single = item.label != _Type.LABEL_REPEATED
            if single and type_name not in _WELL_KNOWN_SCHEMAS and type_name not in path:
                element = document.index.element(item.type_name)
                parameters += _query_parameters(
                    document, element, (), f"{prefix}{item.json_name}.", path
                )
            continue
        note = f"Also accepted as `{prefix}{item.name}`." if item.json_name != item.name else ""
        name = prefix + item.json_name
        parameters.append(_parameter(document, request, number, name, "query", note))
    return parameters


def _parameter(
    document: _Document, owner: Element, number: int, name: str, where: str, note: str
) -> dict[str, Any]:
    """Return the parameter named name, in the path or the query, that sets the number-th
    field of owner; note ends its description."""
    assert owner.message is not None
    item = owner.message.field[number]
    schema = document.field(owner, number, item)
    # Field behaviours speak of message bodies; a parameter is always input.
    schema.pop("readOnly", None)
    schema.pop("writeOnly", None)
    description = " ".join(filter(None, [schema.pop("description", ""), note]))
    parameter: dict[str, Any] = {"name": name, "in": where}
    if description:
        parameter["description"] = description
    if where == "path" or "REQUIRED" in field_behaviors(item):
        parameter["required"] = True
    return {**parameter, "schema": schema}


def _request_body(
    document: _Document,
    rpc: str,
    method: descriptor_pb2.MethodDescriptorProto,
    request: Element,
    binding: Binding,
) -> dict[str, Any] | None:
    """Return the request body of a binding, or None when it takes none."""
    if not binding.body:
        return None
    if request.full_name == HTTP_BODY:
        return _raw_body(rpc, "The raw bytes.", required=True)
    assert request.message is not None
    if binding.body == "*":
        in_path = {name.split(".")[0] for name, _ in path_variables(binding.path)}
        fields = [item for item in request.message.field if item.name not in in_path]
        schema = document.message(request, in_path) if in_path else document.ref(request)
        description = document.describe(request.public, request.file, request.path)
        if in_path:
            description = f"{description} The path sets {_listed(sorted(in_path))}.".strip()
        required = any("REQUIRED" in field_behaviors(item) for item in fields)
    else:
        number, item = _field_named(request, binding.body)
        required = "REQUIRED" in field_behaviors(item)
        if item.type_name.lstrip(".") == HTTP_BODY:
            return _raw_body(rpc, f"The raw bytes, as `{item.name}`.", required=required)
        schema = document.field(request, number, item)
        description = schema.pop("description", "") or f"The `{item.json_name}` field."
    if method.client_streaming:
        # A streamed request travels as a JSON array of its messages.
        schema = {"type": "array", "items": schema}
    return {
        "description": description,
        "required": required,
        "content": {_JSON: {"schema": schema}},
    }


def _raw_body(rpc: str, description: str, *, required: bool) -> dict[str, Any]:
    """Return a request body of raw bytes in the media types the RPC takes."""
    content = {
        media: {"schema": dict(_BINARY)} for media in _RAW_MEDIA_TYPES.get(rpc, _RAW_DEFAULT)
    }
    return {"description": description, "required": required, "content": content}


def _success(
    document: _Document, rpc: str, method: descriptor_pb2.MethodDescriptorProto, binding: Binding
) -> dict[str, Any]:
    """Return the 200 response of a binding."""
    response = document.index.element(method.output_type)
    if response.full_name == HTTP_BODY:
        media = _RAW_MEDIA_TYPES.get(rpc, _RAW_DEFAULT)
        return {
            "description": "The raw bytes, with the content type the RPC reports.",
            "content": {each: {"schema": dict(_BINARY)} for each in media},
        }
    assert response.message is not None
    description = document.describe(response.public, response.file, response.path)
    if binding.response_body:
        number, item = _field_named(response, binding.response_body)
        schema = document.field(response, number, item)
        description = schema.pop("description", "") or description
    else:
        schema = document.ref(response)
    if method.server_streaming:
        # The transcoder answers a stream of messages with a JSON array of them.
        schema = {"type": "array", "items": schema}
    return {"description": description or "OK", "content": {_JSON: {"schema": schema}}}


def _failures(
    comment: Sequence[str], authenticated: bool, json_body: bool
) -> dict[str, dict[str, Any]]:
    """Return the error responses of an operation by HTTP status: the codes its RPC can end
    with (as docs/api.md lists them) and the edge's own answers."""
    causes: dict[int, list[str]] = {}
    for code, when in errors(comment, authenticated):
        causes.setdefault(HTTP_STATUS[code], []).append(f"`{code}`: {when}")
    for status, when, json_only in _EDGE_ANSWERS:
        if json_only and not json_body:
            continue
        reply = LOCAL_REPLIES[status]
        name = _CODE_NAMES[reply.code]
        causes.setdefault(status, []).append(
            f"`{name}`, reason `{reply.reason}`, from the edge: {when}"
        )
    responses = {}
    for status in sorted(causes):
        lines = causes[status]
        text = lines[0] if len(lines) == 1 else "\n".join(f"- {line}" for line in lines)
        responses[str(status)] = {"description": text, "content": _ERROR}
    return responses


def _listed(names: Sequence[str]) -> str:
    """Return field names as a Markdown list in prose: "`a`, `b` and `c`"."""
    quoted = [f"`{name}`" for name in names]
    return " and ".join(filter(None, [", ".join(quoted[:-1]), quoted[-1]]))


def _field_at(index: Index, message: Element, path: str) -> tuple[Element, int]:
    """Return (owning message, number among its fields) of a dotted field path."""
    head, _, rest = path.partition(".")
    number, item = _field_named(message, head)
    if not rest:
        return message, number
    return _field_at(index, index.element(item.type_name), rest)


def _field_named(message: Element, name: str) -> tuple[int, descriptor_pb2.FieldDescriptorProto]:
    """Return (number among the fields, field) of a message's field by proto name."""
    assert message.message is not None
    return next((i, item) for i, item in enumerate(message.message.field) if item.name == name)


def _oneofs(message: descriptor_pb2.DescriptorProto, omit: Collection[str]) -> list[list[str]]:
    """Return the JSON names of the members of each real oneof (proto3 optional ones aside)."""
    members: dict[str, list[str]] = {}
    for item in message.field:
        oneof = oneof_name(message, item)
        if oneof is not None and item.name not in omit:
            members.setdefault(oneof, []).append(item.json_name)
    return list(members.values())


def _at_most_one(names: Sequence[str]) -> dict[str, Any]:
    """Return a schema that holds when no two of the named properties are present."""
    pairs = [[a, b] for i, a in enumerate(names) for b in names[i + 1 :]]
    return {"not": {"anyOf": [{"required": pair} for pair in pairs]}}


if __name__ == "__main__":
    sys.exit(main())
