"""The server interceptor every service installs: request ids, access logs and error mapping."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from meshkit import errors
from meshkit.access_tokens import ACCOUNT_HEADER
from meshkit.grpc_errors import message_for, status_code_for, trailing_metadata_for
from meshkit.handlers import Behavior, Handler, HandlerInterceptor, rewrap
from meshkit.request_context import REQUEST_ID_HEADER, bind_request_id
from meshkit.rpc_metrics import MethodFigures, RpcMetrics

log = logging.getLogger("meshkit.access")

# Probes and tooling would drown the access log; they are still served and mapped.
_QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# Calls slower than this are logged even when they succeed.
SLOW_CALL_MS = 250.0

# How long a call may keep the server waiting for its request message, and for each next
# message of a request stream. grpc-python would wait forever (a unary call whose stream ends
# without a message is never answered at all), so every call reads its requests through these
# bounds; docs/architecture.md lists them with the edge's limits.
REQUEST_WAIT_SECONDS = 10.0
STREAM_IDLE_SECONDS = 30.0


class ServiceInterceptor(HandlerInterceptor):
    """Bind the request id, read requests within bounds, log one access line per call, map
    DomainError to a status, and count every call in metrics (its own unless given)."""

    def __init__(
        self,
        *,
        request_wait_seconds: float = REQUEST_WAIT_SECONDS,
        stream_idle_seconds: float = STREAM_IDLE_SECONDS,
        metrics: RpcMetrics | None = None,
    ) -> None:
        self._waits = _Waits(first=request_wait_seconds, idle=stream_idle_seconds)
        self.metrics = metrics or RpcMetrics()

    def intercept_handler(
        self, handler: Handler, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        """Wrap the handler's behaviour, whatever its RPC kind."""
        method: str = handler_call_details.method
        request_id = account = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == REQUEST_ID_HEADER and isinstance(value, str):
                request_id = value
            elif key == ACCOUNT_HEADER and isinstance(value, str):
                account = value
        call = _Call(
            method,
            request_id,
            method.startswith(_QUIET_PREFIXES),
            self._waits,
            self.metrics,
            account,
        )
        streaming_in = bool(handler.request_streaming)
        return rewrap(
            handler,
            unary=lambda behavior: _wrap_unary(behavior, call, streaming_in),
            stream=lambda behavior: _wrap_stream(behavior, call, streaming_in),
            request_deserializer=_tolerant(handler.request_deserializer),
            stream_requests=True,
        )


@dataclass(frozen=True)
class _Waits:
    """Bounds on waiting for request messages, in seconds."""

    first: float
    idle: float


@dataclass(frozen=True)
class _Call:
    """What the wrappers need to know about one call."""

    method: str
    request_id: str
    quiet: bool
    waits: _Waits
    metrics: RpcMetrics
    edge_account: str = ""
    """The account whose token the edge verified for this call ("" when none)."""


class _Malformed:
    """Stands in for a request message whose bytes did not parse."""


_MALFORMED = _Malformed()


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wrap a request deserializer so corrupt bytes yield a marker instead of an exception.

    grpc would answer a parse failure with UNKNOWN and the exception's text; the marker lets
    the call end as INVALID_ARGUMENT, like any other bad input.
    """
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError:
            return _MALFORMED

    return parse


async def _request(requests: AsyncIterator[Any], call: _Call, streaming_in: bool) -> Any:
    """Return what the servicer expects: the one request message, read within the wait bound,
    or the request stream, each message checked and read within the idle bound."""
    if streaming_in:
        return _checked_stream(requests, call.waits)
    try:
        # asyncio.timeout, not wait_for: no extra task per call on this hot path.
        async with asyncio.timeout(call.waits.first):
            message = await anext(requests)
    except StopAsyncIteration:
        raise errors.InvalidArgument(message="the call carried no request message") from None
    except TimeoutError:
        raise errors.InvalidArgument(
            message=f"no request message arrived within {call.waits.first:g} s"
        ) from None
    if message is _MALFORMED:
        raise _malformed_error()
    return message


async def _checked_stream(requests: AsyncIterator[Any], waits: _Waits) -> AsyncIterator[Any]:
    """Yield the messages of a request stream; a corrupt one or a stalled stream ends the call
    with INVALID_ARGUMENT."""
    while True:
        try:
            async with asyncio.timeout(waits.idle):
                message = await anext(requests)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise errors.InvalidArgument(
                message=f"the request stream stalled for {waits.idle:g} s"
            ) from None
        if message is _MALFORMED:
            raise _malformed_error()
        yield message


def _malformed_error() -> errors.InvalidArgument:
    """The answer to request bytes that are not the method's protobuf message."""
    return errors.InvalidArgument(message="the request is not a valid protobuf message")


def _wrap_unary(behavior: Behavior, call: _Call, streaming_in: bool) -> Behavior:
    """Wrap a handler that returns one response; it is served from the request stream."""

    async def wrapper(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        bind_request_id(call.request_id)
        figures = call.metrics.started(call.method)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await behavior(await _request(requests, call, streaming_in), context)
        except BaseException as exc:
            code = _code_for(exc, context)
            await _abort(exc, code, context, call.method)
            raise
        finally:
            _access(call, code, started, figures)

    return wrapper


def _wrap_stream(behavior: Behavior, call: _Call, streaming_in: bool) -> Behavior:
    """Wrap a handler that yields a stream of responses; it is served from the request stream."""

    async def wrapper(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        bind_request_id(call.request_id)
        figures = call.metrics.started(call.method)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            request = await _request(requests, call, streaming_in)
            async for response in behavior(request, context):
                yield response
        except BaseException as exc:
            code = _code_for(exc, context)
            await _abort(exc, code, context, call.method)
            raise
        finally:
            _access(call, code, started, figures)

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
        await context.abort(code, message_for(exc), trailing_metadata_for(exc))
    if code == grpc.StatusCode.UNIMPLEMENTED:
        await context.abort(code, "method not implemented")
    # The client sees a generic message; the details stay in our logs only.
    log.exception("unhandled error in %s", method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def _access(call: _Call, code: grpc.StatusCode, started: float, figures: MethodFigures) -> None:
    """Count a finished call in its figures and write its access line.

    Failed and slow calls are logged at INFO; fast successful ones at DEBUG, because the edge
    already logs every request with the same request id and a line per call in every service
    costs a tenth of a service's CPU under load.
    """
    elapsed = time.perf_counter() - started
    figures.finished(code, elapsed)
    elapsed_ms = elapsed * 1000
    ok = code == grpc.StatusCode.OK
    if ok and (call.quiet or (elapsed_ms < SLOW_CALL_MS and not log.isEnabledFor(logging.DEBUG))):
        return
    extra: dict[str, object] = {
        "method": call.method,
        "code": code.name,
        "duration_ms": round(elapsed_ms, 2),
    }
    if call.edge_account:
        extra["edge_account_id"] = call.edge_account
    log.log(logging.DEBUG if ok and elapsed_ms < SLOW_CALL_MS else logging.INFO, "rpc", extra=extra)
