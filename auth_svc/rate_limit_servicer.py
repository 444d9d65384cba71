"""Envoy's rate-limit service (envoy.service.ratelimit.v3.RateLimitService) over
auth_svc.rate_limiter: the edge's global rate-limit filter calls it for the strict groups."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from auth_svc.rate_limiter import RateLimiter, read_descriptor
from meshgram.ratelimit.v1 import ratelimit_pb2 as pb
from meshgram.ratelimit.v1 import ratelimit_pb2_grpc

# The name Envoy calls; our copy of its messages lives in meshgram.ratelimit.v1 (same wire form).
ENVOY_SERVICE = "envoy.service.ratelimit.v3.RateLimitService"

_Response = pb.ShouldRateLimitResponse


class RateLimitServicer(ratelimit_pb2_grpc.RateLimitServiceServicer):
    """Answers the edge's ShouldRateLimit calls."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def ShouldRateLimit(  # noqa: N802 (name fixed by the proto)
        self, request: pb.ShouldRateLimitRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ShouldRateLimitResponse:
        """Count the request against each descriptor; OVER_LIMIT with Retry-After and a readable
        body when any is over."""
        descriptors = [
            read_descriptor([(entry.key, entry.value) for entry in descriptor.entries])
            for descriptor in request.descriptors
        ]
        verdict = await self._limiter.check(descriptors, request.hits_addend, datetime.now(tz=UTC))
        response = _Response(
            overall_code=_Response.CODE_OVER_LIMIT if verdict.over else _Response.CODE_OK
        )
        for status in verdict.statuses:
            item = response.statuses.add(
                code=_Response.CODE_OVER_LIMIT if status.over else _Response.CODE_OK,
                limit_remaining=status.remaining,
            )
            item.duration_until_reset.FromSeconds(status.reset_seconds)
        if verdict.over:
            seconds = str(verdict.retry_after_seconds)
            response.response_headers_to_add.add(key="retry-after", value=seconds)
        return response


def add_to_server(servicer: RateLimitServicer, server: grpc.aio.Server) -> None:
    """Serve servicer under Envoy's service name."""
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.ShouldRateLimit,
        request_deserializer=pb.ShouldRateLimitRequest.FromString,
        response_serializer=_Response.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(ENVOY_SERVICE, {"ShouldRateLimit": handler}),)
    )
