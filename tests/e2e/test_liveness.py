"""No call hangs and no client can hold the services: requests without a message, with a cut
frame or that never finish are answered or ended, and never reach a service incomplete."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest

from meshgram.auth.v1 import auth_pb2
from tests.e2e.support import grpc_web_unframe, rest_sign_in
from tools.mesh import Mesh

GET_MY_PROFILE = "/meshgram.user.v1.UserService/GetMyProfile"
GET_JWKS = "/meshgram.auth.v1.AuthService/GetJwks"


@pytest.fixture
def http(edge_url: str) -> Iterator[httpx.Client]:
    """An HTTP/1.1 client, as browsers use for gRPC-web; no call may take 10 s."""
    with httpx.Client(base_url=edge_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def bearer(edge_url: str) -> str:
    """The authorization header of a signed-in user: the edge checks tokens before a call goes
    on, and these tests are about what follows, the request's body."""
    with httpx.Client(base_url=edge_url, timeout=30) as client:
        _, tokens = rest_sign_in(client)
    return f"Bearer {tokens['accessToken']}"


def no_requests() -> AsyncIterator[bytes]:
    """A request stream that ends without a message."""

    async def empty() -> AsyncIterator[bytes]:
        return
        yield b""  # unreachable; makes this an async generator

    return empty()


def raw_stream_call(
    channel: grpc.aio.Channel, method: str
) -> grpc.aio.StreamUnaryMultiCallable[bytes, bytes]:
    """method called with the request stream in our hands (bytes in, bytes out)."""
    return channel.stream_unary(
        method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw
    )


async def test_a_unary_call_without_a_message_is_invalid_argument_at_once(
    edge_channel: grpc.aio.Channel, bearer: str
) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_stream_call(edge_channel, GET_MY_PROFILE)(
            no_requests(), timeout=10, metadata=(("authorization", bearer),)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no request message" in (caught.value.details() or "")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("empty", b"", grpc.StatusCode.INVALID_ARGUMENT),
        ("two bytes", b"\x00\x00", grpc.StatusCode.INVALID_ARGUMENT),
        (
            "cut frame",
            b"\x00" + struct.pack(">I", 100) + b"0123456789",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        # grpc reads a zero-length frame whatever its flags as an empty message: the call runs
        # (GetMyProfile needs nothing more).
        ("lone trailer frame", b"\x80" + struct.pack(">I", 0), grpc.StatusCode.OK),
    ],
)
def test_incomplete_grpc_web_bodies_end_promptly_with_a_client_error(
    http: httpx.Client, bearer: str, name: str, body: bytes, code: grpc.StatusCode
) -> None:
    started = time.monotonic()
    reply = http.post(
        GET_MY_PROFILE,
        content=body,
        headers={
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "authorization": bearer,
        },
    )
    assert time.monotonic() - started < 5, name
    status = reply.headers.get("grpc-status") or grpc_web_unframe(reply.content)[1]["grpc-status"]
    assert status == str(code.value[0]), (name, reply.headers)


async def test_calls_that_never_finish_do_not_take_the_service_from_others(
    edge_channel: grpc.aio.Channel, mesh: Mesh
) -> None:
    # More unfinished calls than the edge lets reach a service at once (1,024): they wait at the
    # edge, complete requests pass them by.
    release = asyncio.Event()

    async def never_finished() -> AsyncIterator[bytes]:
        # The call's headers go out at once; its message and its end never come.
        await release.wait()
        return
        yield b""  # unreachable; makes this an async generator

    # Each on its own connection (grpc would otherwise share one), as separate clients are.
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(mesh.edge_address, options=own_connection) for _ in range(12)
    ]
    calls = [
        raw_stream_call(channel, GET_JWKS)(never_finished(), timeout=30)
        for channel in channels
        for _ in range(95)
    ]
    try:
        await asyncio.sleep(1.0)
        jwks = edge_channel.unary_unary(
            GET_JWKS,
            request_serializer=auth_pb2.GetJwksRequest.SerializeToString,
            response_deserializer=auth_pb2.GetJwksResponse.FromString,
        )
        for _ in range(5):
            reply = await jwks(auth_pb2.GetJwksRequest(), timeout=5)
            assert reply.keys
    finally:
        for call in calls:
            call.cancel()
        release.set()
        for channel in channels:
            await channel.close()
