"""Per-request context (request id, caller) carried in contextvars across awaits."""

from __future__ import annotations

import uuid
from contextvars import ContextVar

REQUEST_ID_HEADER = "x-request-id"

_request_id: ContextVar[str] = ContextVar("request_id", default="")


def current_request_id() -> str:
    """Return the id of the request being served, or "" outside a request."""
    return _request_id.get()


def bind_request_id(value: str | None) -> str:
    """Set the current request id (a fresh one when value is empty or unusable) and return it."""
    # Ids come from clients: keep them short and printable so they cannot forge log lines.
    if not value or len(value) > 128 or not value.isprintable():
        value = uuid.uuid4().hex
    _request_id.set(value)
    return value
