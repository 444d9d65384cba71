"""Log lines never carry credentials, whatever bytes they hold or whoever logs them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from meshkit import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Configure service logging into a buffer; restore the root logger afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    logs.configure_logging("test_svc", "INFO")
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_grpc_report_of_a_non_utf8_header_withholds_the_value(captured: io.StringIO) -> None:
    raw = b"Bearer abc\xff\xfedef-secret-token"
    try:
        raw.decode()
    except UnicodeDecodeError:
        # The shape grpc's own logger uses for such a value.
        logging.getLogger("grpc._cython.cygrpc").exception("Invalid encoding on %s", raw)
    [line] = lines(captured)
    text = json.dumps(line)
    assert "secret-token" not in text
    assert "abc" not in text
    assert line["level"] == "WARNING"
    assert "exc_info" not in line


@pytest.mark.parametrize(
    "message",
    [
        "calling with authorization: Bearer tok\\xffen-value",
        "header was bearer\tsecret-token-value",
        "token eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl leaked",
    ],
)
def test_bearer_values_and_jwts_are_redacted_anywhere(captured: io.StringIO, message: str) -> None:
    logging.getLogger("anything").error(message)
    [line] = lines(captured)
    assert logs.REDACTED in str(line["message"])
    for secret in ("en-value", "secret-token-value", "c2lnbmF0dXJl"):
        assert secret not in json.dumps(line)


def test_redaction_reaches_tracebacks(captured: io.StringIO) -> None:
    try:
        raise ValueError("bad header Bearer very-secret-token")
    except ValueError:
        logging.getLogger("anything").exception("failed")
    [line] = lines(captured)
    assert "very-secret-token" not in json.dumps(line)
    assert "ValueError" in str(line["exc_info"])


def test_ordinary_lines_are_untouched(captured: io.StringIO) -> None:
    logging.getLogger("anything").info("listening on %s", "127.0.0.1:50051")
    [line] = lines(captured)
    assert line["message"] == "listening on 127.0.0.1:50051"
    assert line["service"] == "test_svc"


def test_a_line_written_inside_a_span_carries_its_trace_and_span_ids(
    captured: io.StringIO,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    logging.getLogger("outside").info("before")
    with TracerProvider().get_tracer("test").start_as_current_span("call") as span:
        logging.getLogger("inside").info("during")
    before, during = lines(captured)
    assert "trace_id" not in before
    context = span.get_span_context()
    assert during["trace_id"] == format(context.trace_id, "032x")
    assert during["span_id"] == format(context.span_id, "016x")
