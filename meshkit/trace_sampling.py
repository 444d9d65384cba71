"""Which spans a service records: those of calls (a trace starts at the edge or at an incoming
call, per the configured sampler), never a trace started by background work on its own."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes


class CallsOnly(Sampler):
    """Drop a span that would start a trace unless it is a server span; ask `calls` otherwise.

    Sweepers, the change feed and readiness probes run SQL and outbound calls outside any
    request: as traces of their own they would bury the requests' traces, every few seconds.
    """

    def __init__(self, calls: Sampler) -> None:
        self._calls = calls

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Decide as `calls` does, except for root spans of background work (dropped)."""
        parent = get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind != SpanKind.SERVER:
            return SamplingResult(Decision.DROP)
        return self._calls.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """Name the sampler in the SDK's diagnostics."""
        return f"CallsOnly{{{self._calls.get_description()}}}"
