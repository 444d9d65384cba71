"""What auth_svc reads from a call's metadata: browser or not, the refresh-token cookie, the
device (User-Agent and client IP), and the response headers that set or clear the cookie.

Browser design. A call that carries an Origin header (browsers send one on every fetch that
reaches the edge as REST or gRPC-web) is a browser's: it never gets a refresh token in a body,
only in the cookie below, which page scripts cannot read (HttpOnly), that only this host gets
back (__Host-, Path=/, Secure) and that no other site can make the browser send (SameSite=
Strict). A call that authenticates with the cookie must, besides, come from an allowed origin
(AUTH_BROWSER_ORIGINS): a cross-site page can neither read the answer (CORS) nor, thanks to
the Origin check, make a state-changing call with the user's cookie (CSRF). Native clients
(grpcurl, services) send no Origin and keep getting the token in the body.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from auth_svc.accounts import Device
from meshkit.errors import PermissionDenied
from meshkit.reasons import Reason

COOKIE_NAME = "__Host-meshgram-refresh"
CLIENT_IP_HEADER = "x-meshgram-client-ip"
USER_AGENT_MAX = 512
_COOKIE_ATTRIBUTES = "Path=/; Secure; HttpOnly; SameSite=Strict"

Metadata = Iterable[tuple[str, str | bytes]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _header(metadata: Metadata, name: str) -> str:
    """The first text value of a header, or ""."""
    for key, value in metadata:
        if key == name and isinstance(value, str):
            return value
    return ""


def parse_networks(spec: str) -> tuple[Network, ...]:
    """Parse comma-separated CIDR networks; ValueError names a bad one."""
    return tuple(ipaddress.ip_network(part.strip()) for part in spec.split(",") if part.strip())


def parse_origins(spec: str) -> frozenset[str]:
    """Parse comma-separated origins into the exact strings browsers send."""
    return frozenset(part.strip().rstrip("/") for part in spec.split(",") if part.strip())


def peer_ip(peer: str) -> str:
    """The IP address in a gRPC peer string ("ipv4:1.2.3.4:5", "ipv6:[::1]:5"), or ""."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host = rest.rpartition(":")[0]
    elif kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]")
    else:
        return ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""


@dataclass(frozen=True)
class WebClients:
    """The browser and proxy rules of one deployment."""

    allowed_origins: frozenset[str]
    trusted_proxies: Sequence[Network]

    def is_browser(self, metadata: Metadata) -> bool:
        """Whether the call came from a browser (it names the page's Origin)."""
        return bool(_header(metadata, "origin"))

    def check_origin(self, metadata: Metadata) -> None:
        """Refuse a browser call from a page that is not allowed: PermissionDenied
        (ORIGIN_NOT_ALLOWED). Calls that set, use or clear the cookie make this check first, so
        no other page can sign the user in as someone else, out, or refresh."""
        if _header(metadata, "origin") and not self._origin_allowed(metadata):
            raise _origin_not_allowed()

    def cookie_token(self, metadata: Metadata) -> str:
        """The refresh token in the call's cookie, "" when there is none; PermissionDenied
        (ORIGIN_NOT_ALLOWED) unless the call names an allowed Origin."""
        token = ""
        for key, value in metadata:
            if key != "cookie" or not isinstance(value, str):
                continue
            for pair in value.split(";"):
                name, _, content = pair.strip().partition("=")
                if name == COOKIE_NAME and content:
                    token = content
        # A cookie comes with whatever request the browser makes, so only an allowed Origin
        # (which no other page can forge) shows the call is the app's.
        if token and not self._origin_allowed(metadata):
            raise _origin_not_allowed()
        return token

    def _origin_allowed(self, metadata: Metadata) -> bool:
        """Whether the call names an Origin this deployment lets use the cookie."""
        return _header(metadata, "origin").rstrip("/") in self.allowed_origins

    def device(self, metadata: Metadata, peer: str) -> Device:
        """The device of a call: its User-Agent (bounded, printable) and client IP, taken from
        the edge's header only when the call comes from a trusted proxy."""
        agent = "".join(c for c in _header(metadata, "user-agent") if c.isprintable())
        address = peer_ip(peer)
        if address and any(ipaddress.ip_address(address) in net for net in self.trusted_proxies):
            stated = _header(metadata, CLIENT_IP_HEADER).strip()
            # A garbled header from the edge: keep the peer's own address.
            with contextlib.suppress(ValueError):
                address = str(ipaddress.ip_address(stated)) if stated else address
        return Device(user_agent=agent[:USER_AGENT_MAX], client_ip=address)


def _origin_not_allowed() -> PermissionDenied:
    """The answer to a browser call from a page that may not use the sign-in cookie."""
    return PermissionDenied(
        message="this page may not use the sign-in cookie", reason=Reason.ORIGIN_NOT_ALLOWED
    )


def set_cookie(token: str, max_age: int | None) -> str:
    """The Set-Cookie value that stores a refresh token; without max_age it is a browser-session
    cookie, gone when the browser closes."""
    lifetime = "" if max_age is None else f"; Max-Age={max(0, max_age)}"
    return f"{COOKIE_NAME}={token}; {_COOKIE_ATTRIBUTES}{lifetime}"


def clear_cookie() -> str:
    """The Set-Cookie value that removes the refresh-token cookie."""
    return f"{COOKIE_NAME}=; {_COOKIE_ATTRIBUTES}; Max-Age=0"
