"""Typed domain errors. Domain code raises these; the server interceptor maps them to gRPC statuses.

Free of grpc imports so rules stay testable without a network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from meshkit.reasons import Reason


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field: its path (e.g. "profile.bio") and what is wrong with it."""

    field: str
    description: str


@dataclass(eq=False)
class DomainError(Exception):
    """Base of every error a client may see; message is safe to show to the caller."""

    message: str
    reason: Reason
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(eq=False)
class InvalidArgument(DomainError):
    """The request breaks a documented rule; violations name each offending field."""

    reason: Reason = Reason.INVALID_FIELD
    violations: list[FieldViolation] = field(default_factory=list)


class AlreadyExists(DomainError):
    """The resource to create collides with an existing one."""


class NotFound(DomainError):
    """The resource does not exist or is not visible to the caller."""


class Unauthenticated(DomainError):
    """Credentials are missing, wrong or expired."""


class PermissionDenied(DomainError):
    """The caller is known but not allowed to do this."""


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the operation."""


@dataclass(eq=False)
class ResourceExhausted(DomainError):
    """Too many attempts; the client may try again after retry_after_seconds."""

    retry_after_seconds: int = 0


class Aborted(DomainError):
    """A concurrent operation on the same thing won; the client may retry once it has ended."""


class OutOfRange(DomainError):
    """The request reaches past the end of something (a byte range past a file's end)."""


class Unavailable(DomainError):
    """A dependency could not be reached; the call may be retried."""


def invalid(violations: list[FieldViolation], message: str = "invalid request") -> InvalidArgument:
    """Build the INVALID_ARGUMENT error for a list of field violations."""
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return InvalidArgument(
        message=f"{message}: {summary}" if summary else message, violations=violations
    )
