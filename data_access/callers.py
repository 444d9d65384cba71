"""Who may call data_access: the caller's identity, and an allow-list per caller.

The caller is decided in one place, CallerPolicy.caller:
- over mutual TLS (every deployment, and `make run` unless MESH_MTLS=0), by the SPIFFE identity
  of the client certificate the TLS handshake verified, spiffe://<trust domain>/<workload>;
  x-mesh-caller headers are ignored there;
- over plaintext (development with MESH_MTLS=0, and in-process tests), by x-mesh-caller plus
  x-mesh-caller-token = HMAC(mesh secret, name) (meshkit.caller).
An unknown identity, a bad token or none is UNAUTHENTICATED (CALLER_UNKNOWN); a known caller
reaching outside its allow-list is PERMISSION_DENIED (CALLER_NOT_ALLOWED). Health and reflection
are open to any peer the transport let in.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import grpc

from meshgram.dataaccess.v1 import dataaccess_pb2
from meshkit.caller import CALLER_HEADER, CALLER_TOKEN_HEADER, derive_caller_token
from meshkit.errors import DomainError, PermissionDenied, Unauthenticated
from meshkit.handlers import Behavior, Handler, HandlerInterceptor, rewrap
from meshkit.mesh_tls import DEFAULT_TRUST_DOMAIN, peer_spiffe_id, workload_of
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


AuthContext = Mapping[str, Iterable[bytes]]
"""What grpcio knows of a call's transport (ServicerContext.auth_context())."""
Metadata = Iterable[tuple[str, str | bytes]]


class CallerPolicy:
    """Decides who a call comes from and whether that caller may reach a method."""

    def __init__(
        self,
        mesh_secret: str | None,
        allowed: Mapping[str, Sequence[str]] = DEFAULT_ALLOWED,
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
    ) -> None:
        self._allowed = {caller: tuple(prefixes) for caller, prefixes in allowed.items()}
        self._trust_domain = trust_domain
        # Derived once: an HMAC per call cost a visible share of data_access's CPU. Without a
        # mesh secret (mutual TLS only) no token is ever accepted.
        self._tokens = {
            caller: derive_caller_token(mesh_secret, caller).encode()
            for caller in allowed
            if mesh_secret is not None
        }

    def caller(self, auth_context: AuthContext, metadata: Metadata) -> str | None:
        """The caller's name as proven by the transport or, over plaintext, by its token; None
        when it proves nothing."""
        if b"ssl" in auth_context.get("transport_security_type", ()):
            # The certificate is the only credential over TLS: headers cannot override it.
            identity = peer_spiffe_id(auth_context)
            return None if identity is None else workload_of(identity, self._trust_domain)
        caller = token = ""
        for key, value in metadata:
            if key == CALLER_HEADER and isinstance(value, str):
                caller = value
            elif key == CALLER_TOKEN_HEADER and isinstance(value, str):
                token = value
        expected = self._tokens.get(caller)
        if expected is None or not token or not hmac.compare_digest(expected, token.encode()):
            return None
        return caller

    def refusal(
        self, method: str, auth_context: AuthContext, metadata: Metadata
    ) -> DomainError | None:
        """Return the error a call to method must end with, or None when it may proceed."""
        if method.startswith(OPEN_PREFIXES):
            return None
        caller = self.caller(auth_context, metadata)
        prefixes = None if caller is None else self._allowed.get(caller)
        if caller is None:
            return Unauthenticated(
                message="unknown caller or bad caller credentials", reason=Reason.CALLER_UNKNOWN
            )
        if prefixes is None or not method.startswith(prefixes):
            # A workload the CA vouches for (the edge, say) that has no business here at all is
            # as refused as one reaching outside its list.
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
        """Check every non-open call inside its handler, where the transport's view of the
        peer (its certificate) is known."""
        method: str = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return handler
        return rewrap(
            handler,
            unary=lambda behavior: _checked(behavior, self._policy, method),
            stream=lambda behavior: _checked_stream(behavior, self._policy, method),
        )


def _checked(behavior: Behavior, policy: CallerPolicy, method: str) -> Behavior:
    """behavior (one response), run only when policy lets the call's caller reach method."""

    async def check(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """Refuse or serve the call."""
        _raise_refusal(policy, method, context)
        return await behavior(request, context)

    return check


def _checked_stream(behavior: Behavior, policy: CallerPolicy, method: str) -> Behavior:
    """behavior (a response stream), run only when policy lets the call's caller reach method."""

    async def check(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        """Refuse or serve the call."""
        _raise_refusal(policy, method, context)
        async for response in behavior(request, context):
            yield response

    return check


def _raise_refusal(
    policy: CallerPolicy, method: str, context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    """Raise the refusal of this call, if any. Raised from the handler (not the interceptor), so
    that the shared ServiceInterceptor renders it with its ErrorInfo like any domain error."""
    refusal = policy.refusal(method, context.auth_context(), context.invocation_metadata() or ())
    if refusal is not None:
        raise refusal
