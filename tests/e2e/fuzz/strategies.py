"""Hypothesis strategies for fuzzing meshgram's public API, derived from protobuf descriptors.

`public_methods()` walks the service descriptors named by meshkit.public_api.PUBLIC_SERVICES, so
an RPC added to a public proto is fuzzed without a change here. For a method's request type:

- `messages(descriptor)` draws messages that parse but push every field to its extremes, chosen
  by field type: strings empty, past the documented limits, astral, with control characters and
  NUL, with thousands of distinct characters; integers at their bounds; floats incl. NaN; open
  enums with unknown numbers; nested messages down to a depth limit; repeated and map fields;
  oneofs; FieldMask paths real and bogus; Timestamp and Duration at and past their valid range.
- `payloads(descriptor)` draws wire bytes: such a message, two of them concatenated (the parser
  merges them), one damaged (cut short, a byte flipped, garbage appended), or random bytes.
- `request_streams(method)` draws what a client sends: mostly one payload, sometimes none or
  several (also to unary methods); for client-streaming methods also chunk streams that spread
  a real blob over the messages.
- `web_requests(method)` draws a gRPC-web request body (binary or base64 text) with the stream
  framed well or badly: declared length above or below the payload, compressed or trailer flag,
  a cut frame header, garbage after the frames.
- `authorizations()` draws the authorization header: half the time the real bearer token (as
  the TOKEN placeholder, filled in at call time), otherwise none or garbage.

`Hints` carries real values (a registered username, a stored image id, valid images) that the
string and bytes strategies mix in, so that some calls get past validation into the domain code.
"""

from __future__ import annotations

import base64
import functools
import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf import descriptor_pool, duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
)
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from meshkit.public_api import PUBLIC_SERVICES

# Nested messages deeper than this are left empty: recursive types (Struct, Value) stay finite.
MAX_DEPTH = 3

# Just past the documented limits (username 30, display name 64, email 254, bio 300, password
# 1024 characters, 4x that unmeasured), large but within the 256 KiB message cap, and past it;
# 1 MiB is the documented upload chunk, a few of which pass the upload limit.
LONG_LENGTHS = (31, 65, 255, 301, 1025, 4097, 20_000, 70_000, 300_000)
LONG_BYTE_LENGTHS = (1025, 70_000, 300_000, 1_048_576, 2_200_000)
# Elements of a repeated field sent many times; their total stays near the message caps.
MANY = (100, 5_000)
_REPEATED_BUDGET_BYTES = 512 * 1024

TOKEN = "{token}"
"""Placeholder for the real access token in an authorization header."""
VALID_AUTHORIZATION = f"Bearer {TOKEN}"


def _b64url_json(text: str) -> str:
    """Base64url without padding of a JSON text, as in a JWT."""
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


# Well-formed JWTs no one signed: one with "alg": "none", one naming a key nobody publishes.
_CLAIMS = _b64url_json(
    '{"sub":"00000000-0000-0000-0000-000000000000","iss":"meshgram-auth","aud":"meshgram",'
    '"iat":1,"exp":99999999999}'
)
_UNSIGNED_TOKEN = _b64url_json('{"alg":"none"}') + "." + _CLAIMS + "."
_UNKNOWN_KEY_TOKEN = _b64url_json('{"alg":"EdDSA","kid":"no-such-key"}') + "." + _CLAIMS + ".AAAA"

_TYPE = FieldDescriptor
_INT_BOUNDS = {
    _TYPE.TYPE_INT32: (-(2**31), 2**31 - 1),
    _TYPE.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _TYPE.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _TYPE.TYPE_UINT32: (0, 2**32 - 1),
    _TYPE.TYPE_FIXED32: (0, 2**32 - 1),
    _TYPE.TYPE_INT64: (-(2**63), 2**63 - 1),
    _TYPE.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _TYPE.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _TYPE.TYPE_UINT64: (0, 2**64 - 1),
    _TYPE.TYPE_FIXED64: (0, 2**64 - 1),
}
_INT32 = _INT_BOUNDS[_TYPE.TYPE_INT32]
_INT64 = _INT_BOUNDS[_TYPE.TYPE_INT64]

# google.protobuf.Timestamp covers 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z; Duration
# +-10,000 years. Values just outside still parse: only the JSON mapping refuses them.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_DURATION_SECONDS = (-315_576_000_000, 315_576_000_000)
_NANOS = (-999_999_999, 999_999_999)

# Where runs of distinct code points start: Latin-1, general punctuation and spaces, private use,
# astral letters, supplementary private use. Error messages that list offending characters grow
# with the number of distinct ones.
_RUN_STARTS = (0x80, 0x2000, 0xE000, 0x10400, 0xF0000)

# Text that trips normalisers, parsers and terminals: NUL, a bidi override, a line separator, a
# BOM, CRLF, dots, look-alikes that lower-case or NFKC-fold to ASCII, expanding compositions,
# quoting and path syntax.
_TRICKY_TEXT = (
    "\x00",
    "\u202e",
    "\u2028",
    "\ufeff",
    "\r\n",
    "..",
    "\u212a",  # KELVIN SIGN: lower() gives an ASCII k
    "\u0130",  # I WITH DOT ABOVE: lower() gives two code points
    "\ufb03",  # the ffi ligature: NFKC gives three letters
    "\u0344",  # NFC gives two code points
    "\U0001f600",
    "'\"%s%n\\",
    "*",
    "a@b",
)

# Wire fragments a careless parser trips over: a length beyond the end, tag 0, an end-group
# without a start, an 11-byte varint, a length of 2^32 - 1.
_BAD_WIRE = (
    b"\x0a\x7f\x01",
    b"\x00",
    b"\x0c",
    b"\x08" + b"\xff" * 10 + b"\x01",
    b"\x0a\xff\xff\xff\xff\x0f",
)


@dataclass(frozen=True)
class Hints:
    """Real values the strategies mix in among the random ones."""

    strings: tuple[str, ...] = ()
    blobs: tuple[bytes, ...] = ()


NO_HINTS = Hints()


@dataclass(frozen=True)
class PublicMethod:
    """One RPC of a public service, as its descriptor declares it."""

    descriptor: MethodDescriptor

    @property
    def path(self) -> str:
        """The HTTP/2 path of the method, "/package.Service/Method"."""
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    @property
    def name(self) -> str:
        """The "Service/Method" name, short enough for tables and test ids."""
        return f"{self.descriptor.containing_service.name}/{self.descriptor.name}"

    @property
    def request(self) -> Descriptor:
        """Descriptor of the request message."""
        return self.descriptor.input_type

    @property
    def client_streaming(self) -> bool:
        """Whether the client sends a stream of requests."""
        return bool(self.descriptor.client_streaming)

    @property
    def server_streaming(self) -> bool:
        """Whether the server answers with a stream of responses."""
        return bool(self.descriptor.server_streaming)


@dataclass(frozen=True)
class WebRequest:
    """A gRPC-web request body as sent, its content type, and how its frames were built."""

    content_type: str
    body: bytes
    framing: str


def public_methods() -> tuple[PublicMethod, ...]:
    """Every method of every public service, in declaration order."""
    pool = descriptor_pool.Default()
    return tuple(
        PublicMethod(method)
        for name in PUBLIC_SERVICES
        for method in pool.FindServiceByName(name).methods
    )


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Draw from one of the strategies with the given relative weights (shrinks to the first)."""
    slots = [index for index, (weight, _) in enumerate(options) for _ in range(weight)]
    return st.sampled_from(slots).flatmap(lambda index: options[index][1])


@functools.cache
def strings(hints: Hints = NO_HINTS) -> st.SearchStrategy[str]:
    """Strings at the extremes: empty, long, astral, control characters, NUL, tricky text, runs
    of distinct characters, real values, and a few of these joined."""
    piece = st.one_of(
        st.characters(codec="utf-8"),
        st.characters(categories=["Cc"]),
        st.characters(min_codepoint=0x10000, codec="utf-8"),
        st.sampled_from(_TRICKY_TEXT),
    )
    mixed = st.lists(piece, max_size=40).map("".join)
    unit = st.one_of(st.sampled_from(_TRICKY_TEXT), st.text(min_size=1, max_size=3))
    long = st.builds(_times, unit, st.sampled_from(LONG_LENGTHS))
    distinct = st.builds(
        _code_point_run, st.sampled_from(_RUN_STARTS), st.sampled_from(LONG_LENGTHS)
    )
    parts = [mixed, long, distinct]
    if hints.strings:
        parts.append(st.sampled_from(hints.strings))
    # Joined, the parts reach further: a run of odd characters in front of a real email, say.
    joined = st.lists(st.one_of(parts), min_size=2, max_size=3).map("".join)
    return st.one_of(st.just(""), st.text(), *parts, joined)


@functools.cache
def blobs(hints: Hints = NO_HINTS) -> st.SearchStrategy[bytes]:
    """Bytes at the extremes: empty, random, long runs past the message caps, real blobs."""
    long = st.builds(
        _times, st.sampled_from((b"\x00", b"\xff", b"\x89PNG")), st.sampled_from(LONG_BYTE_LENGTHS)
    )
    options = [st.just(b""), st.binary(max_size=64), long]
    if hints.blobs:
        options.append(st.sampled_from(hints.blobs))
    return st.one_of(options)


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Integers in [low, high]; the bounds, 0 and 1 (-1 where allowed) are drawn often."""
    edges = sorted({low, high, max(low, -1), 0, min(high, 1)})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


@functools.cache
def enums(enum: EnumDescriptor) -> st.SearchStrategy[int]:
    """Enum numbers: the declared ones and, for open enums, any other int32."""
    known = st.sampled_from([value.number for value in enum.values])
    if enum.is_closed:
        return known
    return st.one_of(known, integers(*_INT32))


@functools.cache
def messages(
    descriptor: Descriptor, hints: Hints = NO_HINTS, depth: int = MAX_DEPTH
) -> st.SearchStrategy[Message]:
    """Messages of a type whose fields are each left unset or drawn from their type's extremes."""
    special = _WELL_KNOWN.get(descriptor.full_name)
    if special is not None:
        return special()
    cls = GetMessageClass(descriptor)
    if depth <= 0:
        return st.builds(cls)
    single = [field for field in descriptor.fields if field.containing_oneof is None]
    values = {field.name: _values(field, descriptor, hints, depth) for field in descriptor.fields}

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        """One message: every plain field maybe set, at most one member of each oneof."""
        message = cls()
        for field in single:
            if draw(st.booleans()):
                _assign(message, field, draw(values[field.name]))
        for oneof in descriptor.oneofs:
            chosen = draw(st.sampled_from((None, *oneof.fields)))
            if chosen is not None:
                _assign(message, chosen, draw(values[chosen.name]))
        return message

    return build()


@functools.cache
def field_masks(real_paths: tuple[str, ...], hints: Hints = NO_HINTS) -> st.SearchStrategy[Message]:
    """FieldMasks naming real paths, bogus ones (unknown, malformed, odd text) or both."""
    bogus = st.one_of(
        st.sampled_from(("", "*", ".", "a..b", "display_name.", ".bio", "profile.bio", "bio.x")),
        strings(hints),
    )
    path = st.one_of(st.sampled_from(real_paths), bogus) if real_paths else bogus
    return _repeated(path).map(lambda paths: field_mask_pb2.FieldMask(paths=paths))


def timestamps() -> st.SearchStrategy[Message]:
    """Timestamps at, inside and past their valid range, nanos included."""
    return st.builds(
        timestamp_pb2.Timestamp,
        seconds=_around(_TIMESTAMP_SECONDS, _INT64),
        nanos=_around((0, _NANOS[1]), _INT32),
    )


def durations() -> st.SearchStrategy[Message]:
    """Durations at, inside and past their valid range, with nanos of either sign."""
    return st.builds(
        duration_pb2.Duration,
        seconds=_around(_DURATION_SECONDS, _INT64),
        nanos=_around(_NANOS, _INT32),
    )


@functools.cache
def payloads(descriptor: Descriptor, hints: Hints = NO_HINTS) -> st.SearchStrategy[bytes]:
    """Request bytes: a well-formed message, two merged, a damaged one, or random bytes."""
    wire = messages(descriptor, hints).map(lambda message: message.SerializeToString())
    return weighted(
        (4, wire),
        (1, st.tuples(wire, wire).map(b"".join)),
        (2, wire.flatmap(_damaged)),
        (1, st.binary(max_size=256)),
    )


@functools.cache
def request_streams(
    method: PublicMethod, hints: Hints = NO_HINTS
) -> st.SearchStrategy[tuple[bytes, ...]]:
    """What a client sends: one request, none, or several; chunk streams for uploads."""
    one = payloads(method.request, hints)
    several = st.lists(one, min_size=2, max_size=4).map(tuple)
    if not method.client_streaming:
        return weighted((8, one.map(lambda payload: (payload,))), (1, st.just(())), (1, several))
    options = [(3, st.lists(one, min_size=1, max_size=5).map(tuple)), (1, st.just(()))]
    chunked = _chunk_streams(method.request, hints)
    if chunked is not None:
        options.append((4, chunked))
    return weighted(*options)


@functools.cache
def web_requests(method: PublicMethod, hints: Hints = NO_HINTS) -> st.SearchStrategy[WebRequest]:
    """gRPC-web bodies framing a request stream, mostly well, sometimes badly; binary or text."""
    streams = request_streams(method, hints)

    @st.composite
    def build(draw: st.DrawFn) -> WebRequest:
        """Frame a drawn stream and encode the body."""
        body, framing = _framed(draw, draw(streams))
        if draw(st.sampled_from(("binary", "text"))) == "binary":
            return WebRequest("application/grpc-web+proto", body, framing)
        text = base64.b64encode(body)
        if draw(st.integers(0, 9)) == 0:
            # A body that is not base64 at all.
            text, framing = b"!" + text, f"{framing}, not base64"
        return WebRequest("application/grpc-web-text", text, framing)

    return build()


@functools.cache
def authorizations() -> st.SearchStrategy[str | None]:
    """The authorization header: half the time VALID_AUTHORIZATION, else none or garbage."""
    # Printable ASCII without spaces or braces: valid in any header, never the placeholder.
    garbage_token = st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="{}"),
        min_size=1,
        max_size=200,
    )
    garbage = st.one_of(
        st.none(),
        st.sampled_from(
            (
                "",
                "Bearer",
                "Basic dXNlcjpwYXNzd29yZA==",
                TOKEN,  # the real token without its scheme
                f"Bearer {TOKEN}x",  # the real token with a broken signature
                f"Bearer x{TOKEN}",
                f"Bearer {TOKEN}.{TOKEN}",
                f"Bearer {_UNSIGNED_TOKEN}",
                f"Bearer {_UNKNOWN_KEY_TOKEN}",
                "Bearer a.b.c",
                "Bearer " + "a" * 12_000,  # between grpc's soft and hard metadata limits
                "Bearer " + "a" * 20_000,  # past the edge's 16 KiB header limit
            )
        ),
        garbage_token.map(lambda token: f"Bearer {token}"),
        garbage_token,
    )
    return weighted((1, st.just(VALID_AUTHORIZATION)), (1, garbage))


@dataclass(frozen=True)
class _Frame:
    """One gRPC-web frame: flag byte, declared length, payload."""

    flag: int
    length: int
    payload: bytes

    def encode(self) -> bytes:
        """The frame's bytes on the wire."""
        return struct.pack(">BI", self.flag, self.length) + self.payload


# Damage to one frame of the body, and damage after the last frame.
_FRAME_DAMAGE = (
    "length over payload",
    "length under payload",
    "compressed flag",
    "trailer flag",
    "other flag",
)
_TAIL_DAMAGE = ("cut frame header", "garbage after frames")


def _damaged_frame(draw: st.DrawFn, frame: _Frame, framing: str) -> _Frame | None:
    """frame damaged as framing says, or None when that damage cannot apply to it."""
    size = len(frame.payload)
    if framing == "length over payload":
        return replace(frame, length=draw(st.integers(size + 1, 2**32 - 1)))
    if framing == "length under payload":
        return replace(frame, length=draw(st.integers(0, size - 1))) if size else None
    if framing == "compressed flag":
        return replace(frame, flag=0x01)
    if framing == "trailer flag":
        return replace(frame, flag=0x80)
    return replace(frame, flag=draw(st.sampled_from((0x02, 0x7F, 0x81, 0xFF))))


def _framed(draw: st.DrawFn, payloads: tuple[bytes, ...]) -> tuple[bytes, str]:
    """The gRPC-web body of payloads, mostly framed well, and how it was framed."""
    frames = [_Frame(0, len(payload), payload) for payload in payloads]
    framing = draw(
        weighted((3, st.just("exact")), (1, st.sampled_from(_FRAME_DAMAGE + _TAIL_DAMAGE)))
    )
    if framing in _FRAME_DAMAGE:
        index = draw(st.integers(0, len(frames) - 1)) if frames else 0
        damaged = _damaged_frame(draw, frames[index], framing) if frames else None
        if damaged is None:
            framing = "exact"
        else:
            frames[index] = damaged
    body = b"".join(frame.encode() for frame in frames)
    if framing == "cut frame header":
        body += draw(st.binary(min_size=1, max_size=4))
    elif framing == "garbage after frames":
        body += draw(st.binary(min_size=5, max_size=64))
    return body, framing


def _times(unit: Any, count: int) -> Any:
    """unit repeated count times (a str or bytes)."""
    return unit * count


def _code_point_run(start: int, count: int) -> str:
    """count consecutive code points from start, surrogates skipped, wrapping below U+110000."""
    points = (start + offset for offset in range(count * 2))
    usable = (point % 0x110000 for point in points if not 0xD800 <= point % 0x110000 <= 0xDFFF)
    return "".join(map(chr, itertools.islice(usable, count)))


def _around(valid: tuple[int, int], wire: tuple[int, int]) -> st.SearchStrategy[int]:
    """Integers of a wire range, the valid range's bounds and the values just past them often."""
    low, high = valid
    edges = sorted({low, high, low - 1, high + 1, 0, *wire})
    return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(*wire))


def _approximate_size(value: Any) -> int:
    """Roughly how many wire bytes a field value takes."""
    if isinstance(value, Message):
        return value.ByteSize() + 2
    if isinstance(value, str | bytes):
        return len(value) + 2
    return 10


def _many(value: Any, count: int) -> list[Any]:
    """value count times, fewer when that would pass the repeated-field budget."""
    return [value] * max(1, min(count, _REPEATED_BUDGET_BYTES // _approximate_size(value)))


def _repeated(element: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """Lists for a repeated field: a few elements, or one element many times."""
    return st.one_of(
        st.lists(element, max_size=4), st.builds(_many, element, st.sampled_from(MANY))
    )


def _map_entry(field: FieldDescriptor) -> Descriptor | None:
    """The key-value entry type of a map field; None for any other field."""
    entry = field.message_type
    return entry if entry is not None and entry.GetOptions().map_entry else None


def _values(
    field: FieldDescriptor, parent: Descriptor, hints: Hints, depth: int
) -> st.SearchStrategy[Any]:
    """Values for one field as _assign expects them: a dict, a list or a single value."""
    entry = _map_entry(field)
    if entry is not None:
        key = _single(entry.fields_by_name["key"], entry, hints, depth)
        value = _single(entry.fields_by_name["value"], entry, hints, depth)
        return st.dictionaries(key, value, max_size=3)
    single = _single(field, parent, hints, depth)
    return _repeated(single) if field.is_repeated else single


def _single(
    field: FieldDescriptor, parent: Descriptor, hints: Hints, depth: int
) -> st.SearchStrategy[Any]:
    """Values for one element of a field, by its type."""
    kind = field.type
    if field.message_type is not None:
        if field.message_type.full_name == field_mask_pb2.FieldMask.DESCRIPTOR.full_name:
            return field_masks(_mask_paths(parent), hints)
        return messages(field.message_type, hints, depth - 1)
    if kind == _TYPE.TYPE_ENUM:
        return enums(field.enum_type)
    if kind == _TYPE.TYPE_STRING:
        return strings(hints)
    if kind == _TYPE.TYPE_BYTES:
        return blobs(hints)
    if kind == _TYPE.TYPE_BOOL:
        return st.booleans()
    if kind == _TYPE.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == _TYPE.TYPE_DOUBLE:
        return st.floats()
    return integers(*_INT_BOUNDS[kind])


def _mask_paths(parent: Descriptor) -> tuple[str, ...]:
    """The paths a FieldMask in parent may really name: by AIP-134 the fields of the resource
    it travels with (the sibling message fields), under their proto and JSON names."""
    paths: list[str] = []
    for sibling in parent.fields:
        if sibling.message_type is None or _map_entry(sibling) is not None:
            continue
        for field in sibling.message_type.fields:
            paths += [field.name, field.json_name, f"{sibling.name}.{field.name}"]
    return tuple(dict.fromkeys(paths))


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    """Set a drawn value on a message field of any shape."""
    target = getattr(message, field.name)
    entry = _map_entry(field)
    if entry is not None:
        if entry.fields_by_name["value"].message_type is None:
            target.update(value)
        else:
            for key, item in value.items():
                target[key].CopyFrom(item)
    elif field.is_repeated:
        target.extend(value)
    elif field.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


@st.composite
def _damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """data cut short, with one byte flipped, or with a bad wire fragment around it."""
    how = draw(st.sampled_from(("cut", "flip", "append", "prepend")))
    if how == "cut" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    fragment = draw(st.sampled_from(_BAD_WIRE))
    return fragment + data if how == "prepend" else data + fragment


def _bytes_paths(descriptor: Descriptor, depth: int = MAX_DEPTH) -> list[tuple[str, ...]]:
    """Paths of the singular bytes fields in a message type, nested ones included."""
    found: list[tuple[str, ...]] = []
    for field in descriptor.fields:
        if field.is_repeated:
            continue
        if field.type == _TYPE.TYPE_BYTES:
            found.append((field.name,))
        elif field.message_type is not None and depth > 1:
            found += [(field.name, *rest) for rest in _bytes_paths(field.message_type, depth - 1)]
    return found


def _chunk_streams(
    descriptor: Descriptor, hints: Hints
) -> st.SearchStrategy[tuple[bytes, ...]] | None:
    """Streams that spread one hint blob over the first bytes field of consecutive messages (an
    upload in chunks); None when there is no blob or no bytes field."""
    paths = _bytes_paths(descriptor)
    if not hints.blobs or not paths:
        return None
    cls = GetMessageClass(descriptor)
    path = paths[0]

    def chunk(data: bytes) -> bytes:
        """One message carrying data at path."""
        message = cls()
        holder = message
        for name in path[:-1]:
            holder = getattr(holder, name)
        setattr(holder, path[-1], data)
        return message.SerializeToString()

    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, ...]:
        """Cut a blob at a few drawn offsets (empty chunks allowed) and wrap every piece."""
        blob = draw(st.sampled_from(hints.blobs))
        cuts = sorted(draw(st.lists(st.integers(0, len(blob)), max_size=6)))
        bounds = [0, *cuts, len(blob)]
        return tuple(chunk(blob[start:end]) for start, end in itertools.pairwise(bounds))

    return build()


_WELL_KNOWN: dict[str, Callable[[], st.SearchStrategy[Message]]] = {
    timestamp_pb2.Timestamp.DESCRIPTOR.full_name: timestamps,
    duration_pb2.Duration.DESCRIPTOR.full_name: durations,
    # A FieldMask outside a resource's message has no real paths: bogus ones only.
    field_mask_pb2.FieldMask.DESCRIPTOR.full_name: lambda: field_masks(()),
}
