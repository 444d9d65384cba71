"""A tiny OTLP/gRPC trace receiver on loopback: it keeps every span the edge and the services
export, flattened with its service name and attributes (the tracing tests and benchmark use it),
and `python -m tools.otlp_receiver` prints them, one line a span, for a look without a collector.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager, suppress
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
    """SpanKind of OTLP: 2 server, 3 client."""
    duration_ms: float
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
    """Keeps what it is sent (and hands each span to `each`, when given)."""

    def __init__(self, each: Callable[[ReceivedSpan], None] | None = None) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()
        self.each = each

    def Export(  # noqa: N802 (the name of the OTLP method)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        """Keep the spans of one export."""
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
                            duration_ms=(span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            resource=resource,
                        )
                    )
        with self.lock:
            self.spans.extend(received)
        if self.each is not None:
            for one in received:
                self.each(one)
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
def otlp_receiver(
    port: int = 0, each: Callable[[ReceivedSpan], None] | None = None
) -> Iterator[OtlpReceiver]:
    """Run a receiver on a loopback port (0: a free one) until the block ends; each, when
    given, sees every span as it arrives."""
    collector = _Collector(each)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    if port == 0:
        raise OSError("the OTLP receiver cannot listen on its port")
    server.start()
    try:
        yield OtlpReceiver(collector, port)
    finally:
        server.stop(grace=None)


def _print(span: ReceivedSpan) -> None:
    """One line a span: trace, parent, service, name and duration."""
    print(
        f"{span.trace_id} {span.parent_span_id or '-':16} {span.span_id} "
        f"{span.service:12} {span.duration_ms:8.2f} ms  {span.name}",
        flush=True,
    )


def main() -> None:
    """Print the spans exported to 127.0.0.1:PORT (4317 unless told) until interrupted."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=4317)
    port = parser.parse_args().port
    with otlp_receiver(port, each=_print):
        print(f"OTLP/gRPC receiver on http://127.0.0.1:{port}; Ctrl-C stops it", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
