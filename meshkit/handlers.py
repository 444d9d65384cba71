"""Server-interceptor plumbing: see the handler of each known method and replace its behaviour,
whatever the RPC kind (unary or streaming, on either side)."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

Behavior = Callable[..., Any]
"""A handler's behaviour: (request or request iterator, context) -> response or response stream."""

# Strings: grpc's classes are generic only in its typing stubs, not at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"


class HandlerInterceptor(grpc.aio.ServerInterceptor, abc.ABC):
    """A server interceptor that gets the handler of every known method and may replace it."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        """Hand known methods' handlers to intercept_handler; unknown methods pass untouched."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self.intercept_handler(handler, handler_call_details)

    @abc.abstractmethod
    def intercept_handler(
        self, handler: Handler, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        """Return the handler that serves this call: handler itself or a replacement."""


def rewrap(
    handler: Handler,
    *,
    unary: Callable[[Behavior], Behavior],
    stream: Callable[[Behavior], Behavior],
    request_deserializer: Callable[[bytes], Any] | None = None,
    stream_requests: bool = False,
) -> Handler:
    """A handler of the same RPC kind and serializers as handler (or the given request
    deserializer), whose behaviour is unary(old) where one response is returned and stream(old)
    where responses are streamed; with stream_requests the new behaviour always receives the
    request stream, also for methods declared with a single request."""
    shape = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if stream_requests:
        # The wire format of one request and of a request stream is the same; only the server's
        # handling differs, so a unary method can be served by a stream handler.
        one: Behavior | None = handler.unary_unary or handler.stream_unary
        if one is not None:
            return grpc.stream_unary_rpc_method_handler(unary(one), **shape)
        many: Behavior | None = handler.unary_stream or handler.stream_stream
        if many is not None:
            return grpc.stream_stream_rpc_method_handler(stream(many), **shape)
        return handler
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **shape)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **shape)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **shape)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **shape)
    return handler
