"""Generate docs/api.md, the reference of meshgram's public API, from the comments in protos/.

Run as `python -m tools.gen_api_docs` to rewrite docs/api.md, or with `--check` to exit with status
1 (printing a diff) when docs/api.md differs from what would be generated. The public protos are
compiled afresh with their source info, as tools/gen_protos.py does for Envoy, so the check needs
neither `make proto` nor any generated file.

For every public service (never dataaccess) and every RPC the page holds: the comments, the REST
mapping of the google.api.http annotation (verb, path, body and where each request field goes),
the request and response messages field by field, and the status codes the RPC can return. Those
codes are the ones its comment names, plus INVALID_ARGUMENT and UNAVAILABLE for every RPC and
UNAUTHENTICATED for every RPC of a service whose comment asks for the "authorization: Bearer"
header.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from meshkit.reasons import ERROR_DOMAIN
from tools.gen_protos import PROTO_ROOT, PUBLIC_PROTOS

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"
COMMAND = "python -m tools.gen_api_docs"

# Field numbers in descriptor.proto that make up SourceCodeInfo.Location paths.
_FILE_MESSAGE = 4
_FILE_ENUM = 5
_FILE_SERVICE = 6
_MESSAGE_FIELD = 2
_MESSAGE_NESTED = 3
_MESSAGE_ENUM = 4
_ENUM_VALUE = 2
_SERVICE_METHOD = 2

# A service whose comment asks for this header authenticates every RPC.
_AUTH_MARKER = "authorization: Bearer"
_HTTP_BODY = "google.api.HttpBody"
_STATUS_CODES = {code.name: int(code.value[0]) for code in grpc.StatusCode}
# What Envoy's REST transcoding answers for each gRPC status (Envoy's grpcToHttpStatus).
_HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
# Codes every RPC may end with, and when, unless its own comment says more.
_BASELINE_ERRORS = {
    "INVALID_ARGUMENT": (
        "The request is malformed or a field breaks its documented rules; a "
        "`google.rpc.BadRequest` detail names each offending field."
    ),
    "UNAVAILABLE": (
        "The service, or a service it depends on, cannot be reached right now; retrying later "
        "may succeed."
    ),
}
_UNAUTHENTICATED = (
    "The access token is missing, malformed, signed by an unknown key or expired; log in or "
    "refresh, then retry."
)
# Well-known types are described by their JSON form rather than their fields.
_WELL_KNOWN = {
    "google.protobuf.Timestamp": (
        "A point in time, in UTC with nanosecond resolution.",
        'an RFC 3339 string, e.g. `"2026-01-31T12:00:00Z"`.',
    ),
    "google.protobuf.FieldMask": (
        "A set of field paths naming the fields an update touches.",
        'one string of comma-separated lowerCamelCase paths, e.g. `"displayName,bio"`.',
    ),
}
_JSON_STRING_TYPES = {"int64", "uint64", "fixed64", "sfixed64", "sint64"}
_PATH_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LONE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


@dataclass(frozen=True)
class _Element:
    """A message or enum of the descriptor set, with what its comments are looked up by."""

    full_name: str
    file: descriptor_pb2.FileDescriptorProto
    path: tuple[int, ...]
    message: descriptor_pb2.DescriptorProto | None = None
    enum: descriptor_pb2.EnumDescriptorProto | None = None

    @property
    def public(self) -> bool:
        """Tell whether the element belongs to one of meshgram's public protos."""
        return self.file.name in PUBLIC_PROTOS


@dataclass
class _Index:
    """Every message and enum by full name, and the comment of every commented element."""

    elements: dict[str, _Element] = field(default_factory=dict)
    comments: dict[tuple[str, tuple[int, ...]], str] = field(default_factory=dict)

    @classmethod
    def of(cls, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> _Index:
        """Index the files of a descriptor set."""
        index = cls()
        for file in files:
            for location in file.source_code_info.location:
                text = location.leading_comments or location.trailing_comments
                if text:
                    index.comments[(file.name, tuple(location.path))] = text
            prefix = f"{file.package}." if file.package else ""
            for i, message in enumerate(file.message_type):
                index._add_message(file, prefix + message.name, message, (_FILE_MESSAGE, i))
            for i, enum in enumerate(file.enum_type):
                index._add_enum(file, prefix + enum.name, enum, (_FILE_ENUM, i))
        return index

    def _add_message(
        self,
        file: descriptor_pb2.FileDescriptorProto,
        name: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
    ) -> None:
        """Index a message and everything nested in it."""
        self.elements[name] = _Element(name, file, path, message=message)
        for i, nested in enumerate(message.nested_type):
            self._add_message(file, f"{name}.{nested.name}", nested, (*path, _MESSAGE_NESTED, i))
        for i, enum in enumerate(message.enum_type):
            self._add_enum(file, f"{name}.{enum.name}", enum, (*path, _MESSAGE_ENUM, i))

    def _add_enum(
        self,
        file: descriptor_pb2.FileDescriptorProto,
        name: str,
        enum: descriptor_pb2.EnumDescriptorProto,
        path: tuple[int, ...],
    ) -> None:
        """Index an enum."""
        self.elements[name] = _Element(name, file, path, enum=enum)

    def paragraphs(
        self, file: descriptor_pb2.FileDescriptorProto, path: tuple[int, ...]
    ) -> list[str]:
        """Return an element's comment as paragraphs, without buf directives."""
        raw = textwrap.dedent(self.comments.get((file.name, path), ""))
        paragraphs: list[str] = []
        lines: list[str] = []
        for line in [*raw.splitlines(), ""]:
            text = line.strip()
            if text.startswith("buf:"):
                continue
            if text:
                lines.append(text)
            elif lines:
                paragraphs.append(" ".join(lines))
                lines = []
        return paragraphs

    def element(self, type_name: str) -> _Element:
        """Return the message or enum a field's type_name (".pkg.Name") refers to."""
        return self.elements[type_name.lstrip(".")]


@dataclass
class _Page:
    """The state of one rendering: lines written and anchors already placed."""

    index: _Index
    lines: list[str] = field(default_factory=list)
    anchored: set[str] = field(default_factory=set)
    documented: set[str] = field(default_factory=set)
    linkable: set[str] = field(default_factory=set)

    def add(self, *lines: str) -> None:
        """Append lines to the page."""
        self.lines.extend(lines)

    def anchor(self, name: str) -> None:
        """Place an HTML anchor for a full name, once per page."""
        if name not in self.anchored:
            self.anchored.add(name)
            self.add(f'<a id="{name}"></a>', "")


def compile_descriptors() -> descriptor_pb2.FileDescriptorSet:
    """Compile the public protos with imports and comments into a descriptor set."""
    googleapis = Path(annotations_pb2.__file__).resolve().parent.parent.parent
    wellknown = Path(str(resources.files("grpc_tools"))) / "_proto"
    with tempfile.TemporaryDirectory(prefix="meshgram-api-docs-") as folder:
        out = Path(folder) / "api.pb"
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"-I{googleapis}",
                f"-I{wellknown}",
                "--include_imports",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *PUBLIC_PROTOS,
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed ({code}) on {', '.join(PUBLIC_PROTOS)}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def render(descriptors: descriptor_pb2.FileDescriptorSet) -> str:
    """Return the Markdown reference of the public services in a descriptor set."""
    index = _Index.of(descriptors.file)
    files = {file.name: file for file in descriptors.file}
    public = [files[name] for name in PUBLIC_PROTOS]
    page = _Page(index)
    external: list[str] = []
    services = []
    for file in public:
        for number, service in enumerate(file.service):
            own: list[str] = []
            for method in service.method:
                for type_name in (method.input_type, method.output_type):
                    _collect(index, index.element(type_name), own, external)
            services.append((file, number, service, own))
            page.linkable.update(own)
    page.linkable.update(external)
    _header(page, public)
    for file, number, service, own in services:
        _service(page, file, number, service, own)
    _other_types(page, external)
    while page.lines and not page.lines[-1]:
        page.lines.pop()
    return "\n".join(page.lines) + "\n"


def generate() -> str:
    """Return what docs/api.md should contain."""
    return render(compile_descriptors())


def check(path: Path = API_DOC) -> str:
    """Return a unified diff from path to the generated page; empty when path is up to date."""
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    wanted = generate()
    if current == wanted:
        return ""
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            fromfile=f"{name} (on disk)",
            tofile=f"{name} (generated)",
        )
    )


def write(path: Path = API_DOC) -> None:
    """Write the generated page to path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generate(), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite docs/api.md, or with --check report whether it is up to date."""
    parser = argparse.ArgumentParser(description="Generate docs/api.md from the proto comments.")
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 and print a diff when docs/api.md is out of date",
    )
    args = parser.parse_args(argv)
    shown = API_DOC.relative_to(ROOT)
    if args.check:
        diff = check()
        if diff:
            sys.stderr.write(diff)
            print(f"{shown} is out of date; regenerate it with `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{shown} is up to date")
        return 0
    write()
    print(f"wrote {shown}")
    return 0


def _header(page: _Page, files: Sequence[descriptor_pb2.FileDescriptorProto]) -> None:
    """Write the title, how to call the API, the table of contents and the error model."""
    page.add(
        "# meshgram API reference",
        "",
        f"<!-- Generated by `{COMMAND}` from the comments in protos/. Do not edit by hand: "
        "change the protos and regenerate. -->",
        "",
        "Every RPC below is served by the Envoy edge (`127.0.0.1:8080` under `make run`) in three "
        "protocols on one port:",
        "",
        "- native gRPC, under the full service name (`/meshgram.auth.v1.AuthService/Login`);",
        "- gRPC-web for browsers (`application/grpc-web+proto` or `application/grpc-web-text`);",
        "- REST/JSON, transcoded from the `google.api.http` annotation shown with each RPC. JSON "
        "field names are lowerCamelCase (the proto names are accepted on input), 64-bit integers "
        "are JSON strings and `google.api.HttpBody` travels as the raw HTTP body.",
        "",
        "Services that need an access token expect the header `authorization: Bearer "
        "<access token>` (gRPC metadata or HTTP header), as issued by "
        "`AuthService.Login` and `AuthService.RefreshToken`.",
        "",
        "## Contents",
        "",
    )
    for file in files:
        for service in file.service:
            full = f"{file.package}.{service.name}"
            rpcs = ", ".join(f"[{m.name}](#{full}.{m.name})" for m in service.method)
            page.add(f"- [{service.name}](#{full}): {rpcs}")
    page.add("- [Errors](#errors)", "- [Other types](#other-types)", "")
    used = sorted(
        {"INTERNAL", *_BASELINE_ERRORS, *_codes_named_in(page.index, files)},
        key=_STATUS_CODES.__getitem__,
    )
    page.add(
        '<a id="errors"></a>',
        "",
        "## Errors",
        "",
        "A failed call ends with a canonical gRPC status code and a message that is safe to show. "
        "Its `grpc-status-details-bin` trailer carries a `google.rpc.Status` whose details hold a "
        f"`google.rpc.ErrorInfo` (a stable UPPER_SNAKE_CASE `reason`, domain `{ERROR_DOMAIN}`) "
        "and, for invalid input, a `google.rpc.BadRequest` listing every offending field. REST "
        "clients get the same status as a JSON body with the HTTP status below.",
        "",
        "| gRPC code | number | HTTP status |",
        "| --- | --- | --- |",
    )
    for code in used:
        page.add(f"| `{code}` | {_STATUS_CODES[code]} | {_HTTP_STATUS[code]} |")
    page.add(
        "",
        "Each RPC lists the codes it can return. `INTERNAL` is left out of those lists: it means "
        "a server defect, its details stay in the server logs, and a client mistake never "
        "causes it. An unknown REST path is answered with HTTP 404.",
        "",
    )


def _service(
    page: _Page,
    file: descriptor_pb2.FileDescriptorProto,
    number: int,
    service: descriptor_pb2.ServiceDescriptorProto,
    own: Sequence[str],
) -> None:
    """Write one service: its comment, every RPC, then the other meshgram types they use."""
    index = page.index
    full = f"{file.package}.{service.name}"
    path = (_FILE_SERVICE, number)
    comment = index.paragraphs(file, path)
    authenticated = _AUTH_MARKER in " ".join(comment)
    page.anchor(full)
    page.add(f"## {service.name}", "")
    page.add(*_prose(comment))
    page.add(
        f"- Full name: `{full}` (gRPC paths start with `/{full}/`)",
        f"- Defined in: `protos/{file.name}`",
        "- Authentication: " + ("access token required on every RPC" if authenticated else "none"),
        "",
    )
    for i, method in enumerate(service.method):
        _method(page, file, (*path, _SERVICE_METHOD, i), full, method, authenticated)
    requests = {t.lstrip(".") for m in service.method for t in (m.input_type, m.output_type)}
    listed = [name for name in own if name not in requests and name not in page.documented]
    if listed:
        page.add(f"### Messages of {service.name}", "")
        for name in listed:
            _element(page, index.elements[name], level="####")


def _method(
    page: _Page,
    file: descriptor_pb2.FileDescriptorProto,
    path: tuple[int, ...],
    service: str,
    method: descriptor_pb2.MethodDescriptorProto,
    authenticated: bool,
) -> None:
    """Write one RPC: comment, signature, REST mapping, messages and errors."""
    index = page.index
    comment = index.paragraphs(file, path)
    request = index.element(method.input_type)
    response = index.element(method.output_type)
    rule: Any = method.options.Extensions[annotations_pb2.http]
    bindings = _bindings(rule) if method.options.HasExtension(annotations_pb2.http) else []
    page.anchor(f"{service}.{method.name}")
    page.add(f"### {method.name}", "")
    page.add(*_prose(comment))
    streamed_in = "stream " if method.client_streaming else ""
    streamed_out = "stream " if method.server_streaming else ""
    page.add(
        "| | |",
        "| --- | --- |",
        f"| gRPC | `rpc {method.name}({streamed_in}{_short(request)}) returns "
        f"({streamed_out}{_short(response)})` |",
    )
    for verb, rest_path, body in bindings:
        page.add(f"| REST | `{verb} {rest_path}` {_body_note(request, body)} |")
    if bindings:
        page.add(f"| REST response | {_response_note(response, rule)} |")
    page.add("")
    request_where = _request_locations(request, bindings)
    page.add(f"**Request** {_type_link(page, request)}", "")
    _message_body(page, request, request_where)
    page.add(f"**Response** {_type_link(page, response)}", "")
    _message_body(page, response, None)
    page.add("**Errors**", "", "| code | HTTP | when |", "| --- | --- | --- |")
    for code, when in _errors(comment, authenticated):
        page.add(f"| `{code}` | {_HTTP_STATUS[code]} | {_cell(when)} |")
    page.add("")


def _message_body(page: _Page, element: _Element, where: dict[str, str] | None) -> None:
    """Write a request or response message in place (once; later mentions link to it)."""
    if element.full_name in page.documented:
        page.add(f"See {_type_link(page, element)} above.", "")
        return
    if not element.public:
        page.add(*_prose(_summary(page.index, element)))
        return
    page.documented.add(element.full_name)
    page.anchor(element.full_name)
    page.add(*_prose(page.index.paragraphs(element.file, element.path)))
    _fields(page, element, where)


def _element(page: _Page, element: _Element, *, level: str) -> None:
    """Write a message or enum that is not itself a request or response."""
    page.documented.add(element.full_name)
    page.anchor(element.full_name)
    page.add(f"{level} {_short(element)}", "")
    if element.public:
        page.add(*_prose(page.index.paragraphs(element.file, element.path)))
    else:
        page.add(*_prose(_summary(page.index, element)))
    if element.full_name in _WELL_KNOWN:
        page.add(f"JSON form: {_WELL_KNOWN[element.full_name][1]}", "")
    elif element.enum is not None:
        _enum_values(page, element)
    else:
        _fields(page, element, None)


def _fields(page: _Page, element: _Element, where: dict[str, str] | None) -> None:
    """Write the field table of a message; `where` adds the REST location of request fields."""
    message = element.message
    assert message is not None
    if not message.field:
        page.add("No fields.", "")
        return
    if where is None:
        page.add("| field | type | description |", "| --- | --- | --- |")
    else:
        page.add("| field | type | REST | description |", "| --- | --- | --- | --- |")
    for i, item in enumerate(message.field):
        name = f"`{item.name}`"
        if item.json_name and item.json_name != item.name:
            name += f" (`{item.json_name}`)"
        comment = page.index.paragraphs(element.file, (*element.path, _MESSAGE_FIELD, i))
        description = " ".join(
            [*_behaviours(item), *map(_escape, comment), *_oneof_note(message, item)]
        )
        cells = [name, _field_type(page, item)]
        if where is not None:
            cells.append(where.get(item.name, ""))
        cells.append(_cell(description))
        page.add("| " + " | ".join(cells) + " |")
    page.add("")


def _enum_values(page: _Page, element: _Element) -> None:
    """Write the value table of an enum."""
    enum = element.enum
    assert enum is not None
    page.add("| value | number | description |", "| --- | --- | --- |")
    for i, value in enumerate(enum.value):
        comment = page.index.paragraphs(element.file, (*element.path, _ENUM_VALUE, i))
        page.add(f"| `{value.name}` | {value.number} | {_cell(_escape(' '.join(comment)))} |")
    page.add("")


def _other_types(page: _Page, external: Sequence[str]) -> None:
    """Write the types from outside meshgram that the public messages use."""
    page.add('<a id="other-types"></a>', "", "## Other types", "")
    remaining = [name for name in external if name not in page.documented]
    if not remaining:
        page.add("None.", "")
    for name in remaining:
        _element(page, page.index.elements[name], level="###")


def _collect(index: _Index, element: _Element, own: list[str], external: list[str]) -> None:
    """Add element and, for meshgram messages, every type its fields use, in first-use order."""
    bucket = own if element.public else external
    if element.full_name in bucket:
        return
    if element.message is not None and element.message.options.map_entry:
        for item in element.message.field:
            if item.type_name:
                _collect(index, index.element(item.type_name), own, external)
        return
    bucket.append(element.full_name)
    if element.public and element.message is not None:
        for item in element.message.field:
            if item.type_name:
                _collect(index, index.element(item.type_name), own, external)


def _codes_named_in(index: _Index, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> set[str]:
    """Return every status code an RPC comment names, across the public services."""
    codes: set[str] = set()
    for file in files:
        for s, service in enumerate(file.service):
            comment = index.paragraphs(file, (_FILE_SERVICE, s))
            if _AUTH_MARKER in " ".join(comment):
                codes.add("UNAUTHENTICATED")
            for m in range(len(service.method)):
                path = (_FILE_SERVICE, s, _SERVICE_METHOD, m)
                codes.update(code for code, _ in _errors(index.paragraphs(file, path), False))
    return codes


def _errors(comment: Sequence[str], authenticated: bool) -> list[tuple[str, str]]:
    """Return (code, when in Markdown) for every code an RPC can end with, in code order."""
    sentences = [s for paragraph in comment for s in _SENTENCE_END.split(paragraph)]
    named = {
        word
        for sentence in sentences
        for word in re.findall(r"\b[A-Z][A-Z_]+\b", sentence)
        if word in _STATUS_CODES and word != "OK"
    }
    generic = dict(_BASELINE_ERRORS)
    if authenticated:
        generic["UNAUTHENTICATED"] = _UNAUTHENTICATED
    result = []
    for code in sorted(named | set(generic), key=_STATUS_CODES.__getitem__):
        said = [s for s in sentences if re.search(rf"\b{code}\b", s)]
        result.append((code, _escape(" ".join(said)) if said else generic[code]))
    return result


def _bindings(rule: Any) -> list[tuple[str, str, str]]:
    """Return (verb, path, body) for an HttpRule and its additional bindings."""
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        return []
    if pattern == "custom":
        verb, path = str(rule.custom.kind), str(rule.custom.path)
    else:
        verb, path = pattern.upper(), str(getattr(rule, pattern))
    found = [(verb, path, str(rule.body))]
    for extra in rule.additional_bindings:
        found.extend(_bindings(extra))
    return found


def _request_locations(
    request: _Element, bindings: Sequence[tuple[str, str, str]]
) -> dict[str, str] | None:
    """Return where each request field travels over REST (path, body or query)."""
    if not bindings or request.message is None:
        return None
    _, path, body = bindings[0]
    in_path = {variable.split(".")[0] for variable in _PATH_VARIABLE.findall(path)}
    where: dict[str, str] = {}
    for item in request.message.field:
        if item.name in in_path:
            where[item.name] = "path"
        elif body == "*":
            where[item.name] = "body"
        elif body == item.name:
            raw = item.type_name.lstrip(".") == _HTTP_BODY
            where[item.name] = "raw body" if raw else "body"
        else:
            where[item.name] = f"query `{item.json_name or item.name}`"
    return where


def _body_note(request: _Element, body: str) -> str:
    """Describe what the REST request body carries."""
    if not body:
        return "(no body)"
    if body == "*":
        return "(body: the request message as JSON)"
    message = request.message
    item = next((f for f in message.field if f.name == body), None) if message else None
    if item is not None and item.type_name.lstrip(".") == _HTTP_BODY:
        return f"(body: the raw bytes, as `{body}`)"
    return f"(body: the `{body}` field as JSON)"


def _response_note(response: _Element, rule: Any) -> str:
    """Describe what a REST response body carries."""
    if response.full_name == _HTTP_BODY:
        return "the raw bytes, with the content type the RPC reports"
    if rule.response_body:
        return f"the `{rule.response_body}` field of {_short(response)} as JSON"
    return f"{_short(response)} as JSON"


def _field_type(page: _Page, item: descriptor_pb2.FieldDescriptorProto) -> str:
    """Render a field's type, linking messages and enums."""
    label = ""
    if item.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        label = "repeated "
    elif item.proto3_optional:
        label = "optional "
    if item.type_name:
        element = page.index.element(item.type_name)
        if element.message is not None and element.message.options.map_entry:
            key, value = element.message.field
            return f"map&lt;{_field_type(page, key)}, {_field_type(page, value)}&gt;"
        return label + _type_link(page, element)
    scalar = descriptor_pb2.FieldDescriptorProto.Type.Name(item.type).removeprefix("TYPE_").lower()
    note = " (JSON string)" if scalar in _JSON_STRING_TYPES and not label else ""
    if scalar == "bytes":
        note = " (base64 in JSON)"
    return f"{label}`{scalar}`{note}"


def _type_link(page: _Page, element: _Element) -> str:
    """Link a message or enum to where the page documents it (when the page does)."""
    if element.full_name not in page.linkable:
        return f"`{_short(element)}`"
    return f"[`{_short(element)}`](#{element.full_name})"


def _short(element: _Element) -> str:
    """Return the name to show: bare for meshgram types, full for others."""
    if element.public:
        return element.full_name.removeprefix(f"{element.file.package}.")
    return element.full_name


def _summary(index: _Index, element: _Element) -> list[str]:
    """Return the one-paragraph description of a type from outside meshgram."""
    if element.full_name in _WELL_KNOWN:
        return [_WELL_KNOWN[element.full_name][0]]
    paragraphs = index.paragraphs(element.file, element.path)
    return paragraphs[:1]


def _behaviours(item: descriptor_pb2.FieldDescriptorProto) -> list[str]:
    """Return the field_behavior annotations of a field as short sentences."""
    values = item.options.Extensions[field_behavior_pb2.field_behavior]
    words = [field_behavior_pb2.FieldBehavior.Name(value) for value in values]
    return [f"*{word.replace('_', ' ').capitalize()}.*" for word in words]


def _oneof_note(
    message: descriptor_pb2.DescriptorProto, item: descriptor_pb2.FieldDescriptorProto
) -> list[str]:
    """Return a note naming a field's oneof (synthetic proto3 optional ones excepted)."""
    if not item.HasField("oneof_index") or item.proto3_optional:
        return []
    return [f"Member of the oneof `{message.oneof_decl[item.oneof_index].name}`."]


def _prose(paragraphs: Sequence[str]) -> list[str]:
    """Render comment paragraphs as Markdown paragraphs."""
    lines: list[str] = []
    for paragraph in paragraphs:
        lines.extend([_escape(paragraph), ""])
    return lines


def _cell(markdown: str) -> str:
    """Fit Markdown into a table cell."""
    return markdown.replace("|", "\\|")


def _escape(text: str) -> str:
    """Keep comment text literal in Markdown (no HTML, emphasis or code spans by accident)."""
    text = text.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;")
    text = text.replace(">", "&gt;").replace("*", "\\*").replace("`", "\\`")
    return _LONE_UNDERSCORE.sub("\\_", text)


if __name__ == "__main__":
    sys.exit(main())
