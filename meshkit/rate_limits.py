"""The edge's rate limits: one table of route groups, each allowed so many requests per window
per client address, with the reason for it (docs/rate-limits.md).

The same table drives the Envoy configuration (tools/edge_rate_limits.py) and is written into
what the edge asks the shared limiter (auth_svc/rate_limiter.py), so the two never disagree. A
group names gRPC methods; REST and gRPC-web calls become those methods at the edge, so every
door to a method counts against the same bucket. MESHGRAM_RATE_LIMITS overrides limits
("login=5/1m,reads=100/10s") or turns them all off ("off").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from google.protobuf.descriptor_pb2 import MethodOptions

from meshgram.auth.v1 import auth_pb2
from meshgram.storage.v1 import storage_pb2
from meshgram.user.v1 import user_pb2
from meshkit.public_api import AUTH_SERVICE

SETTING = "MESHGRAM_RATE_LIMITS"
# The rate-limit domain of the edge's calls to the shared limiter.
DOMAIN = "meshgram-edge"
# Descriptor keys the edge sends to the shared limiter, in this order.
GROUP_KEY = "group"
LIMIT_KEY = "limit"
CLIENT_KEY = "remote_address"
# The prefix of media downloads by URL (the edge's /media/ routes): reads too.
MEDIA_PREFIX = "/media/"


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` calls of a route group per `window_seconds` from one client address."""

    group: str
    requests: int
    window_seconds: int
    shared: bool
    """Kept by the shared limiter in PostgreSQL (one count for every edge replica); otherwise
    each edge replica keeps its own token bucket in memory."""
    reason: str

    @property
    def descriptor_value(self) -> str:
        """The limit as the edge writes it into its descriptor: "<requests>/<seconds>"."""
        return f"{self.requests}/{self.window_seconds}"


def _auth(*methods: str) -> tuple[str, ...]:
    """gRPC paths of AuthService methods."""
    return tuple(f"/{AUTH_SERVICE}/{method}" for method in methods)


# Strict groups: what a flood of them costs is mail to strangers, bcrypt CPU or a guess at a
# secret. Every other public method is a read (the proto marks it free of side effects) or a
# write.
STRICT_METHODS: Mapping[str, tuple[str, ...]] = {
    "login": _auth("Login", "Reauthenticate"),
    "register": _auth("Register"),
    "password_reset": _auth("RequestPasswordReset", "ResetPassword"),
    "resend_mail": _auth("ResendVerificationEmail", "ChangeEmail"),
    "mfa": _auth("VerifyMfa", "ConfirmMfaEnrollment", "DisableMfa", "RegenerateRecoveryCodes"),
}

DEFAULT_LIMITS: tuple[RateLimit, ...] = (
    RateLimit(
        "login",
        30,
        300,
        shared=True,
        reason="password guessing from one address across many accounts (auth_svc's lockouts "
        "guard each account; this caps one address) and the bcrypt CPU each attempt costs",
    ),
    RateLimit(
        "register",
        10,
        3600,
        shared=True,
        reason="bulk sign-ups, probing which addresses have accounts, and verification mail "
        "sent to strangers",
    ),
    RateLimit(
        "password_reset",
        10,
        900,
        shared=True,
        reason="reset mail sent to strangers, and guessing reset tokens",
    ),
    RateLimit(
        "resend_mail",
        5,
        900,
        shared=True,
        reason="every call sends mail: auth_svc's cooldown guards one mailbox, this one address",
    ),
    RateLimit(
        "mfa",
        30,
        300,
        shared=True,
        reason="guessing one-time and recovery codes (auth_svc caps attempts per challenge, "
        "this caps one address across challenges)",
    ),
    RateLimit(
        "writes",
        300,
        60,
        shared=False,
        reason="a flood guard for everything else that changes state; per edge replica, since "
        "a shared count would cost a database write per request",
    ),
    RateLimit(
        "reads",
        1200,
        60,
        shared=False,
        reason="a flood guard for reads and media downloads, loose enough for a busy app "
        "screen; per edge replica, like writes",
    ),
)
GROUPS = tuple(limit.group for limit in DEFAULT_LIMITS)

_PUBLIC_FILES = (auth_pb2.DESCRIPTOR, user_pb2.DESCRIPTOR, storage_pb2.DESCRIPTOR)


def group_methods(files: Iterable[object] = _PUBLIC_FILES) -> dict[str, tuple[str, ...]]:
    """Map every group to the gRPC paths it covers: the strict groups' methods, then every
    other public method as a read (idempotency_level NO_SIDE_EFFECTS) or a write."""
    strict = {path for paths in STRICT_METHODS.values() for path in paths}
    reads: list[str] = []
    writes: list[str] = []
    for file in files:
        for service in file.services_by_name.values():  # type: ignore[attr-defined]
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                if path in strict:
                    continue
                level = method.GetOptions().idempotency_level
                (reads if level == MethodOptions.NO_SIDE_EFFECTS else writes).append(path)
    return {**STRICT_METHODS, "writes": tuple(writes), "reads": tuple(reads)}


_ENTRY = re.compile(r"(?P<group>[a-z_]+)=(?P<requests>\d+)/(?P<amount>\d*)(?P<unit>[smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
WINDOW_MAX_SECONDS = 86400


def parse_limits(text: str, base: Sequence[RateLimit] = DEFAULT_LIMITS) -> tuple[RateLimit, ...]:
    """The limits of base with text's overrides applied; () when text is "off". text is empty
    or comma-separated "<group>=<requests>/<window>" entries, the window in seconds or with a
    unit (30s, 5m, 1h, 1d; a bare unit means one of it). ValueError names what is wrong."""
    stripped = text.strip()
    if stripped.lower() == "off":
        return ()
    limits = {limit.group: limit for limit in base}
    for raw in filter(None, (part.strip() for part in stripped.split(","))):
        entry = _ENTRY.fullmatch(raw.replace(" ", ""))
        if entry is None:
            raise ValueError(
                f"{SETTING}: {raw!r} is not <group>=<requests>/<window> (e.g. login=5/1m)"
            )
        group = entry["group"]
        if group not in limits:
            raise ValueError(f"{SETTING}: unknown group {group!r}; groups: {', '.join(GROUPS)}")
        seconds = int(entry["amount"] or 1) * _UNIT_SECONDS[entry["unit"]]
        requests = int(entry["requests"])
        if not 1 <= seconds <= WINDOW_MAX_SECONDS or not 1 <= requests <= 1_000_000_000:
            raise ValueError(
                f"{SETTING}: {raw!r} needs 1 to 10^9 requests in a window of 1 s to 1 day"
            )
        limits[group] = replace(limits[group], requests=requests, window_seconds=seconds)
    return tuple(limits.values())


def limits_from_env(env: Mapping[str, str]) -> tuple[RateLimit, ...]:
    """The edge's limits for env (MESHGRAM_RATE_LIMITS over the defaults)."""
    return parse_limits(env.get(SETTING, ""))


def format_limits(limits: Iterable[RateLimit]) -> str:
    """limits as a MESHGRAM_RATE_LIMITS value (windows in seconds)."""
    return ",".join(f"{limit.group}={limit.requests}/{limit.window_seconds}s" for limit in limits)


def scaled(factor: int, limits: Iterable[RateLimit] = DEFAULT_LIMITS) -> str:
    """A MESHGRAM_RATE_LIMITS value allowing factor times the requests of limits (test suites
    whose every client is one loopback address)."""
    return format_limits(replace(limit, requests=limit.requests * factor) for limit in limits)
