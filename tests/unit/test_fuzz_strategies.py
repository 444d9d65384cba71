"""The fuzzing suite's own parts, without the mesh: the strategies (tests/e2e/fuzz/strategies.py)
draw what they promise (every public RPC, messages that parse for every public request type and
for rich well-known types, well-framed gRPC-web bodies, the real token half the time), and the
harness tells known issues from new defects."""

from __future__ import annotations

import base64

import pytest
from google.protobuf import struct_pb2, type_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgram.auth.v1 import auth_pb2
from meshgram.storage.v1 import storage_pb2
from meshgram.user.v1 import user_pb2
from tests.e2e.fuzz.harness import CONNECTION_LOST, Outcome
from tests.e2e.fuzz.strategies import (
    TOKEN,
    VALID_AUTHORIZATION,
    Hints,
    PublicMethod,
    authorizations,
    messages,
    public_methods,
    request_streams,
    web_requests,
)

QUICK = settings(max_examples=15, derandomize=True, database=None, deadline=None)
METHODS = public_methods()
HINTS = Hints(strings=("ada",), blobs=(b"\x89PNG\r\n\x1a\n" + bytes(range(256)),))
# Well-known types with what the public requests lack: enums, oneofs, maps, doubles, recursion.
RICH_TYPES = (struct_pb2.Value.DESCRIPTOR, type_pb2.Type.DESCRIPTOR)


def test_every_method_declared_in_the_public_protos_is_fuzzed() -> None:
    # Read from the files, not from PUBLIC_SERVICES: a service added there but not to the
    # public list would go unfuzzed.
    declared = {
        f"/{service.full_name}/{method.name}"
        for file in (auth_pb2.DESCRIPTOR, user_pb2.DESCRIPTOR, storage_pb2.DESCRIPTOR)
        for service in file.services_by_name.values()
        for method in service.methods
    }
    assert {method.path for method in METHODS} == declared


@pytest.mark.parametrize(
    "descriptor",
    [*(method.request for method in METHODS), *RICH_TYPES],
    ids=lambda descriptor: descriptor.full_name,
)
@QUICK
@given(case=st.data())
def test_drawn_messages_survive_the_wire(descriptor: Descriptor, case: st.DataObject) -> None:
    message = case.draw(messages(descriptor, HINTS))
    parsed = GetMessageClass(descriptor).FromString(message.SerializeToString())
    # Equal bytes rather than equal messages: NaN never equals itself.
    assert parsed.SerializeToString(deterministic=True) == message.SerializeToString(
        deterministic=True
    )


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.name)
@QUICK
@given(case=st.data())
def test_exactly_framed_web_bodies_are_well_formed(
    method: PublicMethod, case: st.DataObject
) -> None:
    request = case.draw(web_requests(method, HINTS))
    if request.framing != "exact":
        return
    body = request.body
    if request.content_type == "application/grpc-web-text":
        body = base64.b64decode(body, validate=True)
    # Data frames only, each as long as it says, and nothing after the last.
    while body:
        assert body[0] == 0
        length = int.from_bytes(body[1:5], "big")
        assert len(body) >= 5 + length
        body = body[5 + length :]


def test_unary_streams_are_mostly_one_message() -> None:
    method = next(method for method in METHODS if not method.client_streaming)
    lengths: list[int] = []

    @settings(QUICK, max_examples=100)
    @given(request_streams(method, HINTS))
    def collect(stream: tuple[bytes, ...]) -> None:
        lengths.append(len(stream))

    collect()
    assert lengths.count(1) > len(lengths) / 2
    assert {0, 1} <= set(lengths)


def test_about_half_the_calls_carry_the_real_token() -> None:
    headers: list[str | None] = []
    method = METHODS[0]

    # Drawn beside a request as in the fuzz tests: alone, repeats of the one valid header
    # would be skipped as already seen.
    @settings(QUICK, max_examples=100)
    @given(authorizations(), request_streams(method, HINTS))
    def collect(header: str | None, _: tuple[bytes, ...]) -> None:
        headers.append(header)

    collect()
    valid = headers.count(VALID_AUTHORIZATION)
    assert 0.3 < valid / len(headers) < 0.7
    # Garbage never contains a brace of its own: only the placeholder is ever filled in.
    for header in headers:
        if header is not None:
            assert "{" not in header.replace(TOKEN, "")


@pytest.mark.parametrize(
    ("outcome", "known"),
    [
        (Outcome("INTERNAL", "Compression bit set but no encoding configured", 0.01, 5), True),
        (Outcome("INTERNAL", "internal error", 0.01, 5), False),
        (Outcome(CONNECTION_LOST, "ReadError('')", 0.2, 12_000_000), True),
        (Outcome(CONNECTION_LOST, "ReadError('')", 0.2, 5_000), False),
    ],
)
def test_only_known_issues_are_exempt(outcome: Outcome, known: bool) -> None:
    assert outcome.defect() is not None
    assert (outcome.failure() is None) is known


def test_deliberate_answers_are_no_defects() -> None:
    assert Outcome("INVALID_ARGUMENT", "bad", 0.01, 5).defect() is None
    assert Outcome("RESOURCE_EXHAUSTED", "big", 0.01, 5, http_status=200).defect() is None
    assert Outcome("OK", "", 11.0, 5).defect() is not None  # past its deadline
    assert Outcome("INVALID_ARGUMENT", "", 0.01, 5, http_status=503).defect() is not None
