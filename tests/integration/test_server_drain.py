"""Shutdown as a load balancer sees it: NOT_SERVING first, still answering during the drain."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2

from meshkit.server import ServiceDefinition, start_server
from tests.helpers import health_status


async def _always_ready() -> bool:
    return True


async def test_drain_reports_not_serving_while_still_answering() -> None:
    definition = ServiceDefinition(
        name="drain-test",
        register=lambda server: None,
        service_names=[],
        reflection_names=[],
        check_ready=_always_ready,
    )
    running = await start_server(definition, "127.0.0.1", 0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(running.stop(grace=1, drain=1.0))
        await asyncio.sleep(0.3)
        # Mid-drain: the server still answers, and tells balancers to go elsewhere.
        assert await health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping
