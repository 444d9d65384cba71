"""The server interceptor every service installs: request ids, access logs and error mapping."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from meshkit import errors
from meshkit.grpc_errors import status_code_for, trailing_metadata_for
from meshkit.request_context import REQUEST_ID_HEADER, bind_request_id

log = logging.getLogger("meshkit.access")

# Probes and tooling would drown the access log; they are still served and mapped.
_QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

Behavior = Callable[..., Any]


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Bind the request id, log one access line per call, map DomainError to a status."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the handler's behaviour; unknown methods pass through untouched."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        request_id = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == REQUEST_ID_HEADER and isinstance(value, str):
                request_id = value
                break
        quiet = method.startswith(_QUIET_PREFIXES)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, request_id, quiet),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method, request_id, quiet),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method, request_id, quiet),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, method, request_id, quiet),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _wrap_unary(behavior: Behavior, method: str, request_id: str, quiet: bool) -> Behavior:
    """Wrap a handler that returns one response."""

    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        bind_request_id(request_id)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await behavior(request, context)
        except BaseException as exc:
            code = _code_for(exc, context)
            await _abort(exc, code, context, method)
            raise
        finally:
            _access(method, code, started, quiet)

    return wrapper


def _wrap_stream(behavior: Behavior, method: str, request_id: str, quiet: bool) -> Behavior:
    """Wrap a handler that yields a stream of responses."""

    async def wrapper(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        bind_request_id(request_id)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as exc:
            code = _code_for(exc, context)
            await _abort(exc, code, context, method)
            raise
        finally:
            _access(method, code, started, quiet)

    return wrapper


def _code_for(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """Return the status code a call that raised exc ends with."""
    if isinstance(exc, errors.DomainError):
        return status_code_for(exc)
    if isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    if isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED
    if isinstance(exc, Exception):
        return grpc.StatusCode.INTERNAL
    return grpc.StatusCode.CANCELLED


async def _abort(
    exc: BaseException,
    code: grpc.StatusCode,
    context: grpc.aio.ServicerContext[Any, Any],
    method: str,
) -> None:
    """End the call with the status for exc; abort() raises AbortError, which grpc expects."""
    if isinstance(exc, grpc.aio.AbortError) or not isinstance(exc, Exception):
        return
    if isinstance(exc, errors.DomainError):
        await context.abort(code, exc.message, trailing_metadata_for(exc))
    if code == grpc.StatusCode.UNIMPLEMENTED:
        await context.abort(code, "method not implemented")
    # The client sees a generic message; the details stay in our logs only.
    log.exception("unhandled error in %s", method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def _access(method: str, code: grpc.StatusCode, started: float, quiet: bool) -> None:
    """Write one access line for a finished call."""
    if quiet and code == grpc.StatusCode.OK:
        return
    log.info(
        "rpc",
        extra={
            "method": method,
            "code": code.name,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
