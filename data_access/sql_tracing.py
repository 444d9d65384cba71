"""SQL spans of data_access: every statement SQLAlchemy runs (OpenTelemetry's SQLAlchemy
instrumentation on the engine) and every prebuilt query run on the driver directly (fetch_one,
fetch_all), each a child of the RPC's server span. Only the statement text with its $n
placeholders is recorded, never the parameters (emails, password hashes, token hashes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine

from meshkit.tracing import tracer, tracing_on

_traced = False


def trace_engine(engine: AsyncEngine) -> None:
    """Give every statement of engine (and of the engines sharing its pool) a span, when this
    process traces; nothing otherwise."""
    global _traced
    if not tracing_on():
        return
    # Imported here: a process that does not trace never loads the instrumentation.
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    # The instrumentor's dependency check stops at SQLAlchemy 2.0, and it would also wrap every
    # Engine.connect() in a span: a pool checkout per call, a span per call that says nothing.
    # Its engine tracer alone listens to the statements (the events are the same in 2.1); the
    # pool figure it keeps goes to the no-op meter (data_access's own metrics cover the pool).
    usage = get_meter("meshgram.sql").create_up_down_counter("db.client.connections.usage")
    EngineTracer(tracer(), engine.sync_engine, usage, enable_commenter=False)  # type: ignore[no-untyped-call]
    _traced = True


def statement_span(sql: str) -> AbstractContextManager[object]:
    """A client span around one statement run on the driver directly, named and described
    like the instrumentation's; a no-op context when the engine is not traced."""
    if not _traced:
        return nullcontext()
    return _span(sql)


@contextmanager
def _span(sql: str) -> Iterator[object]:
    """The span of one statement, current while it runs."""
    operation = sql.split(maxsplit=1)[0].upper() if sql.strip() else "SQL"
    attributes = {"db.system": "postgresql", "db.statement": sql}
    with tracer().start_as_current_span(
        operation, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
    ) as span:
        yield span
