"""Brute-force defence of logins: failures counted in PostgreSQL (through data_access, so every
replica sees them and restarts forget nothing), a lockout per address and client, a CAPTCHA per
address and per client, and a throttle per client.

Why this shape: a lockout of the account as a whole would let anyone who knows an address keep
its owner out. So the hard wait applies only to one address *from one client network* (an IPv4
address, an IPv6 /64): after AUTH_LOCKOUT_AFTER_FAILURES failures that client waits
AUTH_LOCKOUT_BASE_SECONDS, doubling with every further failure up to AUTH_LOCKOUT_MAX_SECONDS,
while the owner elsewhere signs in as usual. Failures against the address from anywhere
(AUTH_CAPTCHA_AFTER_FAILURES) only ask for a CAPTCHA, which a person solves and a script does
not; so does a client network failing across many addresses (AUTH_CAPTCHA_AFTER_CLIENT_FAILURES),
and at AUTH_CLIENT_LOCKOUT_AFTER_FAILURES that network waits too. Counters start again after
AUTH_LOCKOUT_RESET_SECONDS without a failure, and a successful login clears its address's.

Unknown and registered addresses are counted alike (by a keyed digest of the address, which the
store never sees in clear), so neither the answers nor their timing tell them apart.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass
from datetime import datetime

from auth_svc import accounts
from auth_svc.captcha import CaptchaVerifier
from auth_svc.security_store import Counter, SecurityStore
from auth_svc.tokens import Clock
from meshkit.errors import FailedPrecondition, FieldViolation, InvalidArgument, ResourceExhausted
from meshkit.reasons import Reason

CAPTCHA_FIELD = "captcha_token"
# IPv6 clients usually own a whole /64: counting per address would let one rotate freely.
_IPV6_PREFIX = 64
_DIGEST_INFO = b"meshgram login attempts v1"


@dataclass(frozen=True)
class DefencePolicy:
    """The thresholds and waits of the defence (AUTH_LOCKOUT_* and AUTH_CAPTCHA_* settings)."""

    lock_after: int = 5
    lock_base_seconds: int = 30
    lock_max_seconds: int = 900
    captcha_after: int = 3
    client_captcha_after: int = 10
    client_lock_after: int = 100
    reset_after_seconds: int = 3600

    def wait(self, failures: int, threshold: int) -> int:
        """Seconds a key with that many failures waits after its last one (0: none)."""
        if failures < threshold:
            return 0
        doublings = min(failures - threshold, 32)
        return int(min(self.lock_base_seconds * 2**doublings, self.lock_max_seconds))


@dataclass(frozen=True)
class AttemptKeys:
    """The counters one login attempt reads and bumps."""

    pair: str
    """The address from this client network: the only key that locks."""
    subject: str
    """The address from anywhere: asks for a CAPTCHA."""
    client: str
    """The client network across addresses: asks for a CAPTCHA, then throttles."""
    client_ip: str = ""
    """The client's own address, which the CAPTCHA provider is told."""

    def all(self) -> list[str]:
        """Every key, in the store's order."""
        return [self.pair, self.subject, self.client]


@dataclass(frozen=True)
class Admission:
    """The counters read when an attempt was let in."""

    keys: AttemptKeys
    counters: list[Counter]

    @property
    def had_failures(self) -> bool:
        """Whether the address has failures to forget after a success."""
        return any(c.failures for c in self.counters[:2])


def client_network(client_ip: str) -> str:
    """The network a client is counted by: its IPv4 address, its IPv6 /64, or "unknown"."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{_IPV6_PREFIX}", strict=False))
    return str(address)


class LoginDefence:
    """Decides whether a login attempt may proceed, and counts its outcome."""

    def __init__(
        self,
        store: SecurityStore,
        captcha: CaptchaVerifier,
        policy: DefencePolicy,
        *,
        digest_key: bytes,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._captcha = captcha
        self._policy = policy
        self._key = hmac.new(digest_key, _DIGEST_INFO, hashlib.sha256).digest()
        self._clock = clock

    def keys(self, email: str, client_ip: str) -> AttemptKeys:
        """The keys of an attempt on an address (in any spelling that logs in to the same
        account) from a client address."""
        # The form logins look accounts up by, so no other spelling of an address (case,
        # Unicode forms, an internationalised domain) gets counters of its own.
        subject = accounts.login_email(email) or email.strip().lower()
        digest = hmac.new(self._key, subject.encode(), hashlib.sha256).hexdigest()
        network = client_network(client_ip)
        return AttemptKeys(
            pair=f"pair:{digest[:32]}:{network}",
            subject=f"subject:{digest[:32]}",
            client=f"client:{network}",
            client_ip=client_ip,
        )

    async def admit(
        self, keys: AttemptKeys, captcha_token: str = "", *, ask_captcha: bool = True
    ) -> Admission:
        """Let an attempt proceed, or raise ResourceExhausted (LOGIN_LOCKED for this address
        from this client, TOO_MANY_ATTEMPTS for this client) with the seconds to wait, or, when
        a CAPTCHA is due and ask_captcha is set: FailedPrecondition (CAPTCHA_REQUIRED) without
        a token, InvalidArgument (CAPTCHA_INVALID) for a refused one, Unavailable
        (CAPTCHA_UNAVAILABLE) when the provider cannot say."""
        policy = self._policy
        counters = await self._store.login_attempts(keys.all(), policy.reset_after_seconds)
        pair, subject, client = counters
        self._refuse_while_waiting(pair, policy.lock_after, Reason.LOGIN_LOCKED)
        self._refuse_while_waiting(client, policy.client_lock_after, Reason.TOO_MANY_ATTEMPTS)
        due = (
            subject.failures >= policy.captcha_after
            or client.failures >= policy.client_captcha_after
        )
        if ask_captcha and due and self._captcha.enabled:
            await self._check_captcha(captcha_token, keys)
        return Admission(keys, counters)

    async def failed(self, keys: AttemptKeys) -> bool:
        """Count a failed attempt; return whether it locked the address from this client."""
        policy = self._policy
        pair, _, _ = await self._store.record_login_failure(keys.all(), policy.reset_after_seconds)
        return pair.failures == policy.lock_after

    async def succeeded(self, admission: Admission) -> None:
        """Forget the address's failures after a successful login (the client's stay)."""
        if admission.had_failures:
            await self._store.clear_login_attempts([admission.keys.pair, admission.keys.subject])

    def _refuse_while_waiting(self, counter: Counter, threshold: int, reason: Reason) -> None:
        """Raise ResourceExhausted while the counter's wait has not passed."""
        wait = self._policy.wait(counter.failures, threshold)
        if not wait or counter.last_failure_at is None:
            return
        left = _seconds_until(counter.last_failure_at, wait, self._clock())
        if left > 0:
            what = (
                "this address from your network"
                if reason is Reason.LOGIN_LOCKED
                else "your network"
            )
            raise ResourceExhausted(
                message=f"too many failed logins for {what}; try again in {left} s",
                reason=reason,
                retry_after_seconds=left,
            )

    async def _check_captcha(self, token: str, keys: AttemptKeys) -> None:
        """Raise unless the CAPTCHA token is present and the provider accepts it."""
        if not token:
            raise FailedPrecondition(
                message="too many failed logins: solve the CAPTCHA and send its captcha_token",
                reason=Reason.CAPTCHA_REQUIRED,
                metadata={"site_key": self._captcha.site_key},
            )
        if not await self._captcha.verify(token, keys.client_ip):
            raise InvalidArgument(
                message="the CAPTCHA was not solved; solve a new one",
                reason=Reason.CAPTCHA_INVALID,
                violations=[FieldViolation(CAPTCHA_FIELD, "was refused by the CAPTCHA provider")],
            )


def _seconds_until(since: datetime, wait: int, now: float) -> int:
    """Whole seconds (rounded up) until wait seconds have passed since since."""
    remaining = since.timestamp() + wait - now
    return int(remaining) + (1 if remaining % 1 else 0) if remaining > 0 else 0
