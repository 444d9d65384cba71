"""Who may call data_access: caller identity from metadata, and an allow-list per caller.

A caller proves its name with x-mesh-caller-token = HMAC(mesh secret, name) (meshkit.caller).
Unknown names and bad tokens are UNAUTHENTICATED (CALLER_UNKNOWN); a known caller reaching
outside its allow-list is PERMISSION_DENIED (CALLER_NOT_ALLOWED). Health and reflection are open.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import grpc

from meshgram.dataaccess.v1 import dataaccess_pb2
from meshkit.caller import CALLER_HEADER, CALLER_TOKEN_HEADER, derive_caller_token
from meshkit.errors import DomainError, PermissionDenied, Unauthenticated
from meshkit.handlers import Handler, HandlerInterceptor, rewrap
from meshkit.reasons import Reason

_SERVICES = dataaccess_pb2.DESCRIPTOR.services_by_name


def _prefix(service: str) -> str:
    """Method-path prefix covering every RPC of a data-access service."""
    return f"/{_SERVICES[service].full_name}/"


# Each service gets only what it needs; above all user_svc never reads password hashes, nor
# sealed TOTP secrets.
DEFAULT_ALLOWED: Mapping[str, tuple[str, ...]] = {
    "auth_svc": (
        _prefix("AccountStoreService"),
        _prefix("AccountSecurityService"),
        _prefix("MailOutboxService"),
    ),
    "user_svc": (
        _prefix("ProfileStoreService"),
        _prefix("SocialGraphService"),
        _prefix("ModerationService"),
        _prefix("AccountLifecycleService"),
        _prefix("ChangeFeedService"),
    ),
    "storage_svc": (_prefix("MediaStoreService"),),
}
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class CallerPolicy:
    """Decides whether a call with given metadata may reach a method."""

    def __init__(
        self, mesh_secret: str, allowed: Mapping[str, Sequence[str]] = DEFAULT_ALLOWED
    ) -> None:
        self._allowed = {caller: tuple(prefixes) for caller, prefixes in allowed.items()}
        # Derived once: an HMAC per call cost a visible share of data_access's CPU.
        self._tokens = {
            caller: derive_caller_token(mesh_secret, caller).encode() for caller in allowed
        }

    def refusal(
        self, method: str, metadata: Iterable[tuple[str, str | bytes]]
    ) -> DomainError | None:
        """Return the error a call to method must end with, or None when it may proceed."""
        if method.startswith(OPEN_PREFIXES):
            return None
        caller = token = ""
        for key, value in metadata:
            if key == CALLER_HEADER and isinstance(value, str):
                caller = value
            elif key == CALLER_TOKEN_HEADER and isinstance(value, str):
                token = value
        prefixes = self._allowed.get(caller)
        expected = self._tokens.get(caller, b"")
        if prefixes is None or not token or not hmac.compare_digest(expected, token.encode()):
            return Unauthenticated(
                message="unknown caller or bad caller token", reason=Reason.CALLER_UNKNOWN
            )
        if not method.startswith(prefixes):
            return PermissionDenied(
                message=f"{caller} may not call {method}", reason=Reason.CALLER_NOT_ALLOWED
            )
        return None


class CallerInterceptor(HandlerInterceptor):
    """Refuses calls whose caller is unknown or not allowed, before the servicer runs."""

    def __init__(self, policy: CallerPolicy) -> None:
        self._policy = policy

    def intercept_handler(
        self, handler: Handler, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        """Pass allowed calls through; give refused ones a handler that raises the refusal."""
        refusal = self._policy.refusal(
            handler_call_details.method, handler_call_details.invocation_metadata or ()
        )
        if refusal is None:
            return handler
        # Raising from the handler (not here) lets the shared ServiceInterceptor render the
        # status with its ErrorInfo details, exactly like any other domain error.
        return _refusing(handler, refusal)


def _refusing(handler: Handler, refusal: DomainError) -> Handler:
    """A handler of the same shape as handler whose behaviour raises refusal."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """End a unary-response call with the refusal."""
        raise refusal

    async def refuse_stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        """End a streaming-response call with the refusal."""
        raise refusal
        yield  # unreachable; makes this an async generator, which streaming handlers must be

    return rewrap(handler, unary=lambda _: refuse, stream=lambda _: refuse_stream)
