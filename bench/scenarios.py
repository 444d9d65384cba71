"""The calls the benchmark makes, as picklable factories for the load processes."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import grpc
import httpx

from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshgram.user.v1 import user_pb2, user_pb2_grpc

Call = Callable[[], Awaitable[bool]]
Close = Callable[[], Awaitable[None]]

# Several HTTP/2 connections, so both Envoy worker threads take a share of the load.
CHANNELS_PER_PROCESS = 4


def _channels(edge: str) -> list[grpc.aio.Channel]:
    """Open separate connections to the edge."""
    return [
        grpc.aio.insecure_channel(edge, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS_PER_PROCESS)
    ]


async def _close_all(channels: list[grpc.aio.Channel]) -> None:
    """Close every channel."""
    for channel in channels:
        await channel.close()


async def _grpc_profile(edge: str, token: str) -> tuple[Call, Close]:
    """GetMyProfile over native gRPC, round-robin over a few connections."""
    channels = _channels(edge)
    stubs = [user_pb2_grpc.UserServiceStub(channel) for channel in channels]
    metadata = (("authorization", f"Bearer {token}"),)
    request = user_pb2.GetMyProfileRequest()
    turn = 0

    async def call() -> bool:
        nonlocal turn
        turn += 1
        try:
            await stubs[turn % len(stubs)].GetMyProfile(request, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError:
            return False
        return True

    return call, functools.partial(_close_all, channels)


async def _rest_profile(edge: str, token: str, connections: int) -> tuple[Call, Close]:
    """GET /v1/profiles/me over HTTP/1.1 keep-alive connections."""
    client = httpx.AsyncClient(
        base_url=f"http://{edge}",
        headers={"authorization": f"Bearer {token}"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=10,
    )

    async def call() -> bool:
        try:
            reply = await client.get("/v1/profiles/me")
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    return call, client.aclose


async def _grpc_login(edge: str, email: str, password: str) -> tuple[Call, Close]:
    """Login over native gRPC."""
    channels = _channels(edge)
    stubs = [auth_pb2_grpc.AuthServiceStub(channel) for channel in channels]
    request = auth_pb2.LoginRequest(email=email, password=password)
    turn = 0

    async def call() -> bool:
        nonlocal turn
        turn += 1
        try:
            await stubs[turn % len(stubs)].Login(request, timeout=30)
        except grpc.aio.AioRpcError:
            return False
        return True

    return call, functools.partial(_close_all, channels)


def grpc_profile(edge: str, token: str) -> Callable[[], Awaitable[tuple[Call, Close]]]:
    """Factory for GetMyProfile over gRPC."""
    return functools.partial(_grpc_profile, edge, token)


def rest_profile(
    edge: str, token: str, connections: int
) -> Callable[[], Awaitable[tuple[Call, Close]]]:
    """Factory for GET /v1/profiles/me."""
    return functools.partial(_rest_profile, edge, token, connections)


def grpc_login(edge: str, email: str, password: str) -> Callable[[], Awaitable[tuple[Call, Close]]]:
    """Factory for Login over gRPC."""
    return functools.partial(_grpc_login, edge, email, password)
