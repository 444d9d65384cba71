"""OpenTelemetry traces of one service process: settings from the standard OTEL_* variables,
the tracer provider exporting over OTLP/gRPC, and the interceptors that give every gRPC call a
server or client span and carry the W3C traceparent from hop to hop.

Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or
OTEL_TRACES_EXPORTER) is set: then no interceptor is installed and no span is ever made, so the
default costs nothing per call.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from meshkit.handlers import Behavior, Handler, HandlerInterceptor, rewrap
from meshkit.request_context import current_request_id
from meshkit.rpc_metrics import split_method

TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
SAMPLER = "OTEL_TRACES_SAMPLER"
SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
SERVICE_NAME = "OTEL_SERVICE_NAME"
SDK_DISABLED = "OTEL_SDK_DISABLED"
# Every variable read here (the SDK's exporter and batch processor read their own OTEL_* too).
VARIABLES = (
    ENDPOINT,
    TRACES_ENDPOINT,
    TRACES_EXPORTER,
    PROTOCOL,
    TRACES_PROTOCOL,
    SAMPLER,
    SAMPLER_ARG,
    SERVICE_NAME,
    SDK_DISABLED,
)
# The OTLP/gRPC endpoint of the specification, used when only OTEL_TRACES_EXPORTER=otlp is set.
DEFAULT_ENDPOINT = "http://localhost:4317"

# The specification's sampler names: whether a trace started by a parent is followed, and
# whether the ratio (OTEL_TRACES_SAMPLER_ARG) or a fixed answer decides a new trace.
_SAMPLERS: dict[str, tuple[bool, float | None]] = {
    "always_on": (False, 1.0),
    "always_off": (False, 0.0),
    "traceidratio": (False, None),
    "parentbased_always_on": (True, 1.0),
    "parentbased_always_off": (True, 0.0),
    "parentbased_traceidratio": (True, None),
}
# Probes and reflection run every few seconds; a span for each would drown the traces.
_UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Codes that mean the server failed, per the OpenTelemetry gRPC conventions; the others are the
# client's doing and leave a server span's status unset.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
REQUEST_ID_ATTRIBUTE = "meshgram.request_id"


class TracingSettingsError(ValueError):
    """An OTEL_* variable holds a value this mesh cannot honour; the message names it."""


@dataclass(frozen=True)
class TracingSettings:
    """Where spans go and which traces are kept, as the OTEL_* variables say."""

    exporter: str
    """"otlp" (OTLP over gRPC) or "console" (spans printed on stdout, for a quick look)."""
    endpoint: str
    """URL of the OTLP/gRPC receiver, e.g. http://localhost:4317."""
    parent_based: bool
    """Follow the sampling decision of an incoming traceparent (the edge's) when there is one."""
    ratio: float
    """Share of the traces started here that are recorded, 0 to 1."""


def tracing_settings(env: Mapping[str, str]) -> TracingSettings | None:
    """Read the tracing settings from env; None when tracing is off (the default, and
    OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none); TracingSettingsError when a value
    is not understood."""
    if env.get(SDK_DISABLED, "").strip().lower() == "true":
        return None
    endpoint = (env.get(TRACES_ENDPOINT) or env.get(ENDPOINT) or "").strip()
    exporter = env.get(TRACES_EXPORTER, "").strip().lower() or ("otlp" if endpoint else "none")
    if exporter == "none":
        return None
    if exporter not in ("otlp", "console"):
        raise TracingSettingsError(f"{TRACES_EXPORTER} must be otlp, console or none")
    protocol = (env.get(TRACES_PROTOCOL) or env.get(PROTOCOL) or "grpc").strip().lower()
    if protocol != "grpc":
        # Envoy and the services share one endpoint: both speak OTLP over gRPC.
        raise TracingSettingsError(f"{PROTOCOL} must be grpc (OTLP over gRPC, port 4317)")
    endpoint = endpoint or DEFAULT_ENDPOINT
    if not endpoint.startswith(("http://", "https://")):
        raise TracingSettingsError(
            f"{ENDPOINT} must be a URL such as http://localhost:4317 (http:// or https://)"
        )
    parent_based, ratio = _sampling(env)
    return TracingSettings(exporter, endpoint, parent_based, ratio)


def _sampling(env: Mapping[str, str]) -> tuple[bool, float]:
    """The sampler of OTEL_TRACES_SAMPLER(_ARG): (parent-based, ratio of new traces kept)."""
    name = env.get(SAMPLER, "").strip().lower() or "parentbased_always_on"
    if name not in _SAMPLERS:
        raise TracingSettingsError(f"{SAMPLER} must be one of {', '.join(_SAMPLERS)}")
    parent_based, fixed = _SAMPLERS[name]
    if fixed is not None:
        return parent_based, fixed
    raw = env.get(SAMPLER_ARG, "").strip() or "1.0"
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise TracingSettingsError(f"{SAMPLER_ARG} must be a number from 0 to 1")
    return parent_based, ratio


def service_name(default: str, env: Mapping[str, str]) -> str:
    """The service name spans are reported under: OTEL_SERVICE_NAME, else default."""
    return env.get(SERVICE_NAME, "").strip() or default


def tracing_on(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process traces (env: the process environment unless given)."""
    return tracing_settings(os.environ if env is None else env) is not None


def configure_tracing(
    default_name: str, env: Mapping[str, str] | None = None
) -> Callable[[], None]:
    """Install the global tracer provider when tracing is on and return the function that
    flushes and stops it (a no-op when off)."""
    env = os.environ if env is None else env
    settings = tracing_settings(env)
    if settings is None:
        return lambda: None
    # Imported here: a process that does not trace never loads the SDK or the exporter.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from meshkit.trace_sampling import CallsOnly

    root = TraceIdRatioBased(settings.ratio)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name(default_name, env)}),
        sampler=CallsOnly(ParentBased(root) if settings.parent_based else root),
    )
    processor: SpanProcessor
    if settings.exporter == "console":
        processor = BatchSpanProcessor(ConsoleSpanExporter())
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # The endpoint is the edge's too; headers, certificates and timeout come from OTEL_*.
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider.shutdown


# A proxy until configure_tracing() installs the provider, then that provider's tracer: looked
# up once, since a lookup per span showed in profiles.
_TRACER = trace.get_tracer("meshgram")


def tracer() -> trace.Tracer:
    """The tracer of meshgram's own spans (the global provider's)."""
    return _TRACER


def _names(full_method: str) -> tuple[str, dict[str, Any]]:
    """Span name ("package.Service/Method") and rpc.* attributes of a gRPC method path."""
    service, method = split_method(full_method)
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    return full_method.lstrip("/"), attributes


def _finish(span: Span, code: grpc.StatusCode, *, server: bool) -> None:
    """Record a call's final status code on its span; errors by the gRPC conventions."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK and (not server or code in _SERVER_FAULTS):
        # The code's name only: status messages may quote what the client sent.
        span.set_status(Status(StatusCode.ERROR, code.name))


class TracingInterceptor(HandlerInterceptor):
    """Serve each call inside a server span continuing the caller's trace (W3C traceparent in
    the metadata), so every span and log line of the call belongs to it. Install it first: the
    access log line of the service interceptor is then written inside the span."""

    def intercept_handler(
        self, handler: Handler, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        """Wrap the handler's behaviour in a span, whatever its RPC kind."""
        method: str = handler_call_details.method
        if method.startswith(_UNTRACED_PREFIXES):
            return handler
        carrier = dict(handler_call_details.invocation_metadata or ())
        call = _ServerCall(method, propagate.extract(carrier))
        return rewrap(handler, unary=call.unary, stream=call.stream)


@dataclass(frozen=True)
class _ServerCall:
    """One incoming call: its method and the trace context it arrived with."""

    method: str
    parent: otel_context.Context

    @contextmanager
    def _span(self) -> Iterator[Span]:
        """The call's server span, current while the call runs."""
        name, attributes = _names(self.method)
        with tracer().start_as_current_span(
            name,
            context=self.parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            # Exception texts may quote requests; the status code says what happened.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    def unary(self, behavior: Behavior) -> Behavior:
        """Wrap a behaviour that returns one response."""

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with self._span() as span:
                code = grpc.StatusCode.OK
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    code = _server_code(exc, context)
                    raise
                finally:
                    _close_server_span(span, code)

        return wrapper

    def stream(self, behavior: Behavior) -> Behavior:
        """Wrap a behaviour that yields a stream of responses."""

        async def wrapper(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            with self._span() as span:
                code = grpc.StatusCode.OK
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as exc:
                    code = _server_code(exc, context)
                    raise
                finally:
                    _close_server_span(span, code)

        return wrapper


def _server_code(
    exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]
) -> grpc.StatusCode:
    """The code a call ends with when its handler raised exc (the service interceptor has
    already turned every error into an abort with its code)."""
    if isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    if isinstance(exc, Exception):
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.CANCELLED


def _close_server_span(span: Span, code: grpc.StatusCode) -> None:
    """Note the request id (bound by the service interceptor inside) and the final code."""
    request_id = current_request_id()
    if request_id:
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
    _finish(span, code, server=True)


def _traced_details(details: grpc.aio.ClientCallDetails, span: Span) -> grpc.aio.ClientCallDetails:
    """details with the span's traceparent (and tracestate) added to the call's metadata."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
    for key, value in carrier.items():
        metadata.add(key, value)
    return details._replace(metadata=metadata)  # type: ignore[attr-defined, no-any-return]


def _client_span(details: grpc.aio.ClientCallDetails) -> Span:
    """Start the client span of an outbound call, a child of the current span."""
    method = details.method
    name, attributes = _names(method.decode() if isinstance(method, bytes) else method)
    return tracer().start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


class TracingClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Give every outbound call a client span and send its traceparent to the peer."""

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Trace a unary call until its answer arrives."""
        span = _client_span(client_call_details)
        try:
            call = await continuation(_traced_details(client_call_details, span), request)
            try:
                # The caller awaits the same call afterwards and gets the same answer or error.
                await call
            except grpc.aio.AioRpcError as exc:
                _finish(span, exc.code(), server=False)
            else:
                _finish(span, grpc.StatusCode.OK, server=False)
            return call
        finally:
            span.end()

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Trace a server-streaming call until it ends."""
        return await _streaming(continuation, client_call_details, request)

    async def intercept_stream_unary(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        """Trace a client-streaming call until it ends."""
        return await _streaming(continuation, client_call_details, request_iterator)

    async def intercept_stream_stream(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        """Trace a bidirectional call until it ends."""
        return await _streaming(continuation, client_call_details, request_iterator)


async def _streaming(continuation: Any, details: grpc.aio.ClientCallDetails, request: Any) -> Any:
    """Start a streaming call under a client span that ends when the call does."""
    span = _client_span(details)
    try:
        call = await continuation(_traced_details(details, span), request)
    except BaseException:
        span.end()
        raise
    call.add_done_callback(lambda _call: span.end())
    return call


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The interceptors a channel to a peer needs: none unless this process traces."""
    return [TracingClientInterceptor()] if tracing_on() else []


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The interceptors a server needs before all others: none unless this process traces."""
    return [TracingInterceptor()] if tracing_on() else []
