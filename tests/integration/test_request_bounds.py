"""Every call reads its requests within bounds: grpc-python alone would never answer a unary call
whose request stream ends without a message, nor end one whose message never comes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from meshkit.interceptors import ServiceInterceptor

ECHO = "/test.Bounds/Echo"  # unary: answers the request's bytes
COUNT = "/test.Bounds/Count"  # client streaming: answers how many messages arrived


async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def count(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> bytes:
    return str(len([request async for request in requests])).encode()


@pytest.fixture
async def address() -> AsyncIterator[str]:
    """A server with short bounds and the two test methods (raw bytes in and out)."""
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(request_wait_seconds=0.3, stream_idle_seconds=0.3)]
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Bounds",
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(echo),
                    "Count": grpc.stream_unary_rpc_method_handler(count),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def requests(*messages: bytes, then_wait: float = 0.0) -> AsyncIterator[bytes]:
    """A request stream of messages that then stays open for then_wait seconds."""

    async def stream() -> AsyncIterator[bytes]:
        for message in messages:
            yield message
        await asyncio.sleep(then_wait)

    return stream()


async def call(address: str, method: str, stream: AsyncIterator[bytes]) -> bytes:
    """Call method with a request stream, whatever the method's declared shape."""
    async with grpc.aio.insecure_channel(address) as channel:
        send = channel.stream_unary(method)
        reply: bytes = await send(stream, timeout=10)
        return reply


async def test_a_unary_call_with_its_message_is_served(address: str) -> None:
    assert await call(address, ECHO, requests(b"hello")) == b"hello"


async def test_a_unary_call_without_a_message_is_answered_at_once(address: str) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(address, ECHO, requests())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "the call carried no request message"
    assert time.monotonic() - started < 0.3


async def test_a_unary_call_whose_message_never_comes_ends_at_the_bound(address: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(address, ECHO, requests(then_wait=5))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "within 0.3 s" in (caught.value.details() or "")


async def test_a_stalled_request_stream_ends_at_the_idle_bound(address: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(address, COUNT, requests(b"a", b"b", then_wait=5))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "stalled" in (caught.value.details() or "")


async def test_a_request_stream_that_keeps_moving_is_served(address: str) -> None:
    async def steady() -> AsyncIterator[bytes]:
        for _ in range(4):
            await asyncio.sleep(0.15)  # each gap under the bound; the whole call over it
            yield b"x"

    assert await call(address, COUNT, steady()) == b"4"
