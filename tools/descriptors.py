"""What meshgram's public protos say about the API: descriptors with their comments, and the
status codes each RPC can end with.

Shared by the generators of docs/api.md (tools/gen_api_docs.py) and docs/openapi.json
(tools/gen_openapi.py), so both documents read comments, authentication and errors alike. The
protos are compiled afresh with their source info: the documents follow protos/ itself, never
stubs that `make proto` has not refreshed yet.
"""

from __future__ import annotations

import re
import tempfile
import textwrap
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import grpc
from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from tools.gen_protos import PROTO_ROOT, PUBLIC_PROTOS

# Field numbers in descriptor.proto that make up SourceCodeInfo.Location paths.
FILE_MESSAGE = 4
FILE_ENUM = 5
FILE_SERVICE = 6
MESSAGE_FIELD = 2
MESSAGE_NESTED = 3
MESSAGE_ENUM = 4
ENUM_VALUE = 2
SERVICE_METHOD = 2

HTTP_BODY = "google.api.HttpBody"
STATUS_CODES = {code.name: int(code.value[0]) for code in grpc.StatusCode}
# What Envoy's REST transcoding answers for each gRPC status (Envoy's grpcToHttpStatus).
HTTP_STATUS = {
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
BASELINE_ERRORS = {
    "INVALID_ARGUMENT": (
        "The request is malformed or a field breaks its documented rules; a "
        "`google.rpc.BadRequest` detail names each offending field."
    ),
    "UNAVAILABLE": (
        "The service, or a service it depends on, cannot be reached right now; retrying later "
        "may succeed."
    ),
}
UNAUTHENTICATED = (
    "The access token is missing, malformed, signed by an unknown key or expired; log in or "
    "refresh, then retry."
)
# Well-known types are described by their JSON form rather than their fields:
# (what the type is, its JSON form in Markdown).
WELL_KNOWN = {
    "google.protobuf.Timestamp": (
        "A point in time, in UTC with nanosecond resolution.",
        'an RFC 3339 string, e.g. `"2026-01-31T12:00:00Z"`.',
    ),
    "google.protobuf.FieldMask": (
        "A set of field paths naming the fields an update touches.",
        'one string of comma-separated lowerCamelCase paths, e.g. `"displayName,bio"`.',
    ),
    "google.protobuf.Duration": (
        "A signed span of time with nanosecond resolution.",
        'seconds with up to nine decimals and an "s" suffix, e.g. `"1.5s"`.',
    ),
}
# Scalar types that proto3 JSON writes as strings (64-bit integers).
JSON_STRING_TYPES = {"int64", "uint64", "fixed64", "sfixed64", "sint64"}

# A service whose comment asks for this header authenticates every RPC.
_AUTH_MARKER = "authorization: Bearer"
_METHOD_AUTH_MARKER = "Needs a bearer access token"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LONE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


@dataclass(frozen=True)
class Element:
    """A message or enum of the descriptor set, with what its comments are looked up by."""

    full_name: str
    file: descriptor_pb2.FileDescriptorProto
    path: tuple[int, ...]
    public: bool
    """Whether the element belongs to one of meshgram's public protos."""
    message: descriptor_pb2.DescriptorProto | None = None
    enum: descriptor_pb2.EnumDescriptorProto | None = None


@dataclass
class Index:
    """Every message and enum by full name, and the comment of every commented element."""

    public: Collection[str] = tuple(PUBLIC_PROTOS)
    """Names of the files whose elements are meshgram's own."""
    elements: dict[str, Element] = field(default_factory=dict)
    comments: dict[tuple[str, tuple[int, ...]], str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        files: Iterable[descriptor_pb2.FileDescriptorProto],
        public: Collection[str] = tuple(PUBLIC_PROTOS),
    ) -> Index:
        """Index the files of a descriptor set; `public` names meshgram's own files."""
        index = cls(public)
        for file in files:
            for location in file.source_code_info.location:
                text = location.leading_comments or location.trailing_comments
                if text:
                    index.comments[(file.name, tuple(location.path))] = text
            prefix = f"{file.package}." if file.package else ""
            for i, message in enumerate(file.message_type):
                index._add_message(file, prefix + message.name, message, (FILE_MESSAGE, i))
            for i, enum in enumerate(file.enum_type):
                index._add_enum(file, prefix + enum.name, enum, (FILE_ENUM, i))
        return index

    def _add_message(
        self,
        file: descriptor_pb2.FileDescriptorProto,
        name: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
    ) -> None:
        """Index a message and everything nested in it."""
        public = file.name in self.public
        self.elements[name] = Element(name, file, path, public, message=message)
        for i, nested in enumerate(message.nested_type):
            self._add_message(file, f"{name}.{nested.name}", nested, (*path, MESSAGE_NESTED, i))
        for i, enum in enumerate(message.enum_type):
            self._add_enum(file, f"{name}.{enum.name}", enum, (*path, MESSAGE_ENUM, i))

    def _add_enum(
        self,
        file: descriptor_pb2.FileDescriptorProto,
        name: str,
        enum: descriptor_pb2.EnumDescriptorProto,
        path: tuple[int, ...],
    ) -> None:
        """Index an enum."""
        public = file.name in self.public
        self.elements[name] = Element(name, file, path, public, enum=enum)

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

    def element(self, type_name: str) -> Element:
        """Return the message or enum a field's type_name (".pkg.Name") refers to."""
        return self.elements[type_name.lstrip(".")]

    def requires_token(self, file: descriptor_pb2.FileDescriptorProto, service: int) -> bool:
        """Tell whether every RPC of a file's service-th service needs an access token, which
        its comment says by naming the "authorization: Bearer" header."""
        return _AUTH_MARKER in " ".join(self.paragraphs(file, (FILE_SERVICE, service)))

    def method_requires_token(
        self, file: descriptor_pb2.FileDescriptorProto, where: tuple[int, ...]
    ) -> bool:
        """Tell whether one RPC (at path `where`) needs an access token, which its own comment
        says with "Needs a bearer access token" (for services where only some RPCs do)."""
        return _METHOD_AUTH_MARKER in " ".join(self.paragraphs(file, where))


def compile_descriptors(
    protos: Sequence[str] = PUBLIC_PROTOS, include: Sequence[Path] = (PROTO_ROOT,)
) -> descriptor_pb2.FileDescriptorSet:
    """Compile protos (paths under the include folders) with imports and comments."""
    googleapis = Path(annotations_pb2.__file__).resolve().parent.parent.parent
    wellknown = Path(str(resources.files("grpc_tools"))) / "_proto"
    with tempfile.TemporaryDirectory(prefix="meshgram-descriptors-") as folder:
        out = Path(folder) / "api.pb"
        code = protoc.main(
            [
                "grpc_tools.protoc",
                *(f"-I{root}" for root in include),
                f"-I{googleapis}",
                f"-I{wellknown}",
                "--include_imports",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *protos,
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed ({code}) on {', '.join(protos)}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def errors(comment: Sequence[str], authenticated: bool) -> list[tuple[str, str]]:
    """Return (code, when in Markdown) for every code an RPC can end with, in code order: the
    codes its comment names, the baseline ones and, when authenticated, UNAUTHENTICATED."""
    sentences = [s for paragraph in comment for s in sentences_of(paragraph)]
    named = {
        word
        for sentence in sentences
        for word in re.findall(r"\b[A-Z][A-Z_]+\b", sentence)
        if word in STATUS_CODES and word != "OK"
    }
    generic = dict(BASELINE_ERRORS)
    if authenticated:
        generic["UNAUTHENTICATED"] = UNAUTHENTICATED
    result = []
    for code in sorted(named | set(generic), key=STATUS_CODES.__getitem__):
        said = [s for s in sentences if re.search(rf"\b{code}\b", s)]
        result.append((code, escape(" ".join(said)) if said else generic[code]))
    return result


def sentences_of(paragraph: str) -> list[str]:
    """Split a comment paragraph into its sentences."""
    return _SENTENCE_END.split(paragraph)


def oneof_name(
    message: descriptor_pb2.DescriptorProto, item: descriptor_pb2.FieldDescriptorProto
) -> str | None:
    """Return the name of the oneof a field of message belongs to; None outside any, and for
    the synthetic oneof of a proto3 optional field."""
    if not item.HasField("oneof_index") or item.proto3_optional:
        return None
    return str(message.oneof_decl[item.oneof_index].name)


def field_behaviors(item: descriptor_pb2.FieldDescriptorProto) -> list[str]:
    """Return the names of a field's google.api.field_behavior annotations, e.g. "REQUIRED"."""
    values = item.options.Extensions[field_behavior_pb2.field_behavior]
    return [field_behavior_pb2.FieldBehavior.Name(value) for value in values]


def escape(text: str) -> str:
    """Keep comment text literal in Markdown (no HTML, emphasis or code spans by accident)."""
    text = text.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;")
    text = text.replace(">", "&gt;").replace("*", "\\*").replace("`", "\\`")
    return _LONE_UNDERSCORE.sub("\\_", text)
