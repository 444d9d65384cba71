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
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # Its dependency check stops at SQLAlchemy 2.0; the engine events it listens to are the
    # same in 2.1, so the engine is instrumented explicitly.
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine, skip_dep_check=True, enable_commenter=False
    )
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
