"""JSON logs on stderr, one object per line, each carrying the current request id (and the trace
and span ids while a call is traced); credentials are kept out of every line, whoever wrote it."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from meshkit.request_context import current_request_id

# What a credential looks like inside a log line: a bearer value (up to the next quote or
# space, whatever bytes it holds) or a compact JWS. Refresh tokens are opaque and never logged.
_CREDENTIAL = re.compile(
    r"(?i)\bbearer\s+[^\s\"']+|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
)
REDACTED = "[redacted]"


class _RequestIdFilter(logging.Filter):
    """Attach the current request id to every record, and the current trace and span ids
    while a span is recording, so a line can be found from its trace and the other way round."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            # The hex forms every tracing UI shows and searches by.
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


class _MetadataDecodeFilter(logging.Filter):
    """Replace grpc's report of a metadata value that is not UTF-8 with one that withholds it.

    grpc logs such a value (an `authorization` header with a stray byte, say) in full, with a
    traceback, as ERROR. The value may be a credential and the fault is the client's, which
    already gets its answer (UNAUTHENTICATED for a bad token): one WARNING without it is enough.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("grpc.") and str(record.msg).startswith("Invalid encoding"):
            record.msg = "a request metadata value is not valid UTF-8 (value withheld)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        return True


class _ScrubbingJsonFormatter(JsonFormatter):
    """A JSON formatter whose output never contains something shaped like a credential."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # Scrubbed field by field, before encoding, so the line stays valid JSON.
        return {key: _scrubbed(value) for key, value in log_data.items()}


def _scrubbed(value: Any) -> Any:
    """value with every string inside it scrubbed."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(item) for item in value]
    return value


def scrub(text: str) -> str:
    """Return text with every bearer value and JWT replaced by a placeholder."""
    return _CREDENTIAL.sub(REDACTED, text)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route all logging to stderr as JSON lines tagged with the service name."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(_MetadataDecodeFilter())
    formatter_options: dict[str, Any] = {
        "style": "{",
        "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        "static_fields": {"service": service},
    }
    handler.setFormatter(
        _ScrubbingJsonFormatter(
            "{asctime}{levelname}{name}{message}{request_id}", **formatter_options
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
