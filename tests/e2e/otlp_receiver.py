"""A tiny OTLP/gRPC trace receiver on loopback for the tracing tests: it keeps every span the
edge and the services export, flattened with its service name and attributes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, as a test looks at it."""

    service: str
    """service.name of the resource that exported it."""
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    """"" for a root span."""
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(value: common_pb2.AnyValue) -> Any:
    """The Python value of an OTLP attribute value."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    """OTLP key-values as a dict; a key repeated keeps every value in a list."""
    found: dict[str, Any] = {}
    for item in items:
        value = _value(item.value)
        if item.key in found:
            previous = found[item.key]
            found[item.key] = (
                [*previous, value] if isinstance(previous, list) else [previous, value]
            )
        else:
            found[item.key] = value
    return found


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps what it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            resource=resource,
                        )
                    )
        with self.lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """A running receiver: its endpoint and the spans it has received."""

    def __init__(self, collector: _Collector, port: int) -> None:
        self._collector = collector
        self.endpoint = f"http://127.0.0.1:{port}"

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        with self._collector.lock:
            return list(self._collector.spans)

    def wait_for(
        self, found: Callable[[list[ReceivedSpan]], bool], seconds: float = 20.0
    ) -> list[ReceivedSpan]:
        """The spans received once found(spans) holds, or when seconds have passed (check)."""
        deadline = time.monotonic() + seconds
        while True:
            spans = self.spans()
            if found(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """Run a receiver on a free loopback port until the block ends."""
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield OtlpReceiver(collector, port)
    finally:
        server.stop(grace=None)
