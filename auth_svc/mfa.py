"""TOTP multi-factor authentication: the secret (sealed at rest), codes checked without replay,
single-use recovery codes, and the caller's own MFA settings (enrol, confirm, disable, new
recovery codes), each behind a recent authentication.

A login with MFA on is two calls: the password yields a challenge sealed by auth_svc (ChallengeBox:
Fernet, with a key of its own from the pepper) that holds the account and its sealed secret, so
the first call stores nothing; the challenge and a code complete it, once (data_access records
its use and its wrong codes).

Codes follow RFC 6238 as authenticator apps expect them: SHA-1, six digits, 30-second steps; a
code of the step before or after now is accepted too (clock drift), and a code is accepted only
for a step later than the last one used, so neither it nor an older code works twice.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken

from auth_svc import tokens
from auth_svc.accounts import Account, AccountStore, Device, Mailer, MailKind
from auth_svc.activity import SecurityLog
from auth_svc.login_defence import LoginDefence
from auth_svc.mail.sealing import sealing_key
from auth_svc.security_store import (
    Enablement,
    EventKind,
    MfaState,
    NewEvent,
    SecurityStore,
    UsedCode,
)
from auth_svc.tokens import Clock
from meshkit.access_tokens import Principal, require_recent_authentication
from meshkit.errors import FailedPrecondition, FieldViolation, NotFound, Unauthenticated, invalid
from meshkit.reasons import Reason

STEP_SECONDS = 30
DIGITS = 6
RECOVERY_CODE_COUNT = 10
# Ten base32 characters: 50 bits each, far beyond guessing within the lockout's limits.
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_LENGTH = 10
SECRET_SEALING_INFO = b"meshgram totp secret v1"
CHALLENGE_SEALING_INFO = b"meshgram mfa login challenge v1"
# Steps either side of now whose code is still accepted: one, as RFC 6238 recommends.
DRIFT_STEPS = 1


class SecretSealError(ValueError):
    """A sealed TOTP secret this key cannot open (sealed with another pepper, or altered)."""


class SecretBox:
    """Seals TOTP secrets for the store and opens them again, with a key from the pepper."""

    def __init__(self, pepper: str) -> None:
        self._fernet = Fernet(sealing_key(pepper, SECRET_SEALING_INFO))

    def seal(self, secret: str) -> bytes:
        """Encrypt and authenticate a base32 secret."""
        return self._fernet.encrypt(secret.encode("ascii"))

    def open(self, sealed: bytes) -> str:
        """Decrypt a sealed secret; SecretSealError when it was sealed with another key."""
        try:
            return self._fernet.decrypt(sealed).decode("ascii")
        except InvalidToken:
            raise SecretSealError("TOTP secret sealed with another key, or altered") from None


@dataclass(frozen=True)
class LoginChallenge:
    """What a login's second step needs from its first: whose it is, the choice to stay signed
    in, and the sealed TOTP secret the code is checked against."""

    account: Account
    remembered: bool
    secret_sealed: bytes
    clears_failures: bool = False
    """Whether the address had failures to forget once the login succeeds."""


@dataclass(frozen=True)
class IssuedChallenge:
    """A sealed challenge for the client, and how long it lives."""

    token: str
    token_hash: str
    expires_at: datetime
    expires_in: int


class ChallengeBox:
    """Seals login challenges into the tokens clients carry to their second step, and opens
    them again: a password step writes nothing to the store, and an altered, foreign or
    expired token opens to nothing."""

    def __init__(self, pepper: str, ttl_seconds: int, clock: Clock = time.time) -> None:
        self._fernet = Fernet(sealing_key(pepper, CHALLENGE_SEALING_INFO))
        self._ttl = ttl_seconds
        self._clock = clock

    def seal(self, challenge: LoginChallenge) -> IssuedChallenge:
        """A token holding challenge, valid for the box's lifetime from now."""
        account = challenge.account
        payload = {
            "a": [account.id, account.email, account.username, account.email_verified],
            "r": challenge.remembered,
            "c": challenge.clears_failures,
            "s": base64.b64encode(challenge.secret_sealed).decode("ascii"),
        }
        now = int(self._clock())
        token = self._fernet.encrypt_at_time(json.dumps(payload).encode(), now).decode("ascii")
        return IssuedChallenge(
            token=token,
            token_hash=tokens.hash_token(token),
            expires_at=datetime.fromtimestamp(now + self._ttl, tz=UTC),
            expires_in=self._ttl,
        )

    def open(self, token: str) -> tuple[LoginChallenge, datetime] | None:
        """The challenge a token holds and when it expires, or None when the token is not one
        of ours, was altered or has expired."""
        try:
            sealed = token.encode("ascii")
            plain = self._fernet.decrypt(sealed)
            # Whole seconds, rounded down when sealed: a challenge lives ttl seconds at most.
            issued = self._fernet.extract_timestamp(sealed)
            if self._clock() >= issued + self._ttl:
                return None
            payload = json.loads(plain)
            account_id, email, username, verified = payload["a"]
            challenge = LoginChallenge(
                account=Account(
                    id=account_id, email=email, username=username, email_verified=verified
                ),
                remembered=bool(payload["r"]),
                secret_sealed=base64.b64decode(payload["s"]),
                clears_failures=bool(payload["c"]),
            )
        except (InvalidToken, UnicodeEncodeError, ValueError, KeyError, TypeError):
            return None
        return challenge, datetime.fromtimestamp(issued + self._ttl, tz=UTC)


def new_secret() -> str:
    """A fresh 160-bit TOTP secret in base32 (the size RFC 4226 recommends for SHA-1)."""
    return pyotp.random_base32(32)


def current_step(now: float) -> int:
    """The TOTP time step of a Unix time."""
    return int(now // STEP_SECONDS)


def code_at(secret: str, step: int) -> str:
    """The code an authenticator app shows for secret during step."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def matching_step(secret: str, code: str, now: float, last_used_step: int) -> int | None:
    """The step within the drift window whose code equals code and that is later than
    last_used_step, or None (a wrong code, or one already used)."""
    here = current_step(now)
    found = None
    # Every candidate is compared, in constant time, so the reply time says nothing.
    for step in range(here - DRIFT_STEPS, here + DRIFT_STEPS + 1):
        if hmac.compare_digest(code_at(secret, step), code) and step > last_used_step:
            found = step if found is None else found
    return found


def normal_code(raw: str) -> str | None:
    """The six digits of a typed TOTP code (spaces and dashes ignored), or None."""
    digits = "".join(ch for ch in raw if ch not in " -")
    return digits if len(digits) == DIGITS and digits.isascii() and digits.isdigit() else None


def new_recovery_codes() -> list[str]:
    """Ten fresh recovery codes, each "xxxxx-xxxxx" of unambiguous letters and digits."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def recovery_code_hash(raw: str) -> str:
    """The stored form of a recovery code, whatever its case, dashes or spaces."""
    return tokens.hash_token("".join(ch for ch in raw.lower() if ch not in " -"))


@dataclass(frozen=True)
class Enrollment:
    """A started enrolment: the secret in every form an authenticator app reads."""

    secret: str
    otpauth_uri: str
    qr_svg: str
    qr_png: bytes
    qr_text: str
    expires_in: int


def qr_forms(uri: str) -> tuple[str, bytes, str]:
    """The URI as a QR code: SVG, PNG and text blocks for a terminal."""
    code = segno.make(uri, error="m")
    svg, png, text = io.BytesIO(), io.BytesIO(), io.StringIO()
    code.save(svg, kind="svg", scale=4, xmldecl=False)
    code.save(png, kind="png", scale=5)
    code.terminal(out=text, compact=True)
    return svg.getvalue().decode("utf-8"), png.getvalue(), text.getvalue()


def code_fields(code: str, recovery_code: str) -> UsedCode | str:
    """Check that a request names exactly one second factor; return the typed TOTP code (as a
    str) or the recovery code's hash (as a UsedCode); InvalidArgument otherwise."""
    if code.strip() and recovery_code.strip():
        raise invalid([FieldViolation("recovery_code", "send either code or recovery_code")])
    if recovery_code.strip():
        return UsedCode(recovery_code_hash=recovery_code_hash(recovery_code))
    if not code.strip():
        raise invalid([FieldViolation("code", "is required (or send a recovery_code)")])
    typed = normal_code(code)
    if typed is None:
        raise invalid([FieldViolation("code", f"must be the {DIGITS} digits the app shows")])
    return typed


def wrong_code() -> Unauthenticated:
    """The one answer for a code that is wrong, used or of no account."""
    return Unauthenticated(
        message="the code is wrong or was already used", reason=Reason.MFA_CODE_INVALID
    )


class SecondFactor:
    """Checks a second factor against an account's stored factor."""

    def __init__(self, box: SecretBox, clock: Clock = time.time) -> None:
        self._box = box
        self._clock = clock

    def check(self, mfa: MfaState, code: str, recovery_code: str) -> UsedCode | None:
        """The code to use up when the request's factor matches the account's, else None;
        InvalidArgument when the request names no factor or two."""
        given = code_fields(code, recovery_code)
        if isinstance(given, UsedCode):
            # Whether it is unused is settled by the store, atomically, when it is used.
            return given
        if mfa.secret_sealed is None:
            return None
        secret = self._box.open(mfa.secret_sealed)
        step = matching_step(secret, given, self._clock(), mfa.last_used_step)
        return None if step is None else UsedCode(step=step)

    async def spend(
        self, store: SecurityStore, account_id: str, mfa: MfaState, code: str, recovery_code: str
    ) -> tuple[UsedCode, int] | None:
        """Check the request's factor and use it up: the code used and the recovery codes
        left, or None when it is wrong or was used (the caller counts the failure);
        InvalidArgument when the request names no factor or two."""
        used = self.check(mfa, code, recovery_code)
        if used is None:
            return None
        try:
            return used, await store.use_mfa_code(account_id, used)
        except FailedPrecondition as refused:
            if refused.reason != Reason.MFA_CODE_INVALID:
                raise
            return None


class MfaSettings:
    """The caller's own MFA: state, enrolment, confirmation, turning off, new recovery codes."""

    def __init__(
        self,
        store: SecurityStore,
        accounts: AccountStore,
        box: SecretBox,
        mailer: Mailer,
        log: SecurityLog,
        defence: LoginDefence,
        *,
        issuer: str,
        enrollment_ttl_seconds: int,
        reauthentication_window_seconds: int,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._box = box
        self._mailer = mailer
        self._log = log
        self._defence = defence
        self._factor = SecondFactor(box, clock)
        self._issuer = issuer
        self._enrollment_ttl = enrollment_ttl_seconds
        self._window = reauthentication_window_seconds
        self._clock = clock

    async def state(self, principal: Principal) -> MfaState:
        """The caller's factor."""
        return await self._store.mfa(principal.account_id)

    async def start_enrollment(self, principal: Principal) -> Enrollment:
        """Store a new pending secret and return it in every form; FailedPrecondition
        (REAUTHENTICATION_REQUIRED, MFA_ALREADY_ENABLED)."""
        self._recent(principal)
        credentials = await self._accounts.get_credentials_by_id(principal.account_id)
        if credentials is None:
            raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
        secret = new_secret()
        await self._store.start_mfa_enrollment(principal.account_id, self._box.seal(secret))
        uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
            name=credentials.account.email, issuer_name=self._issuer
        )
        svg, png, text = qr_forms(uri)
        return Enrollment(secret, uri, svg, png, text, self._enrollment_ttl)

    async def confirm(self, principal: Principal, code: str, device: Device) -> list[str]:
        """Turn MFA on with a first code for the pending secret and return the recovery codes;
        Unauthenticated (MFA_CODE_INVALID), NotFound (MFA_ENROLLMENT_NOT_FOUND),
        FailedPrecondition (REAUTHENTICATION_REQUIRED, MFA_ALREADY_ENABLED)."""
        self._recent(principal)
        typed = normal_code(code) if code.strip() else None
        if typed is None:
            raise invalid([FieldViolation("code", f"must be the {DIGITS} digits the app shows")])
        mfa = await self._store.mfa(principal.account_id)
        if mfa.enabled:
            raise _already_enabled()
        if mfa.pending_secret_sealed is None or self._expired(mfa.pending_started_at):
            raise _no_enrollment()
        secret = self._box.open(mfa.pending_secret_sealed)
        step = matching_step(secret, typed, self._clock(), 0)
        if step is None:
            raise wrong_code()
        codes = new_recovery_codes()
        email = await self._email(principal)
        await self._store.enable_mfa(
            self._event(principal, EventKind.MFA_ENABLED, device),
            Enablement(
                pending_secret_sealed=mfa.pending_secret_sealed,
                used_step=step,
                recovery_code_hashes=[recovery_code_hash(c) for c in codes],
                enrollment_ttl_seconds=self._enrollment_ttl,
                mail=self._mailer.compose(MailKind.MFA_ENABLED, email),
            ),
        )
        self._mailer.queued()
        return codes

    async def disable(
        self, principal: Principal, code: str, recovery_code: str, device: Device
    ) -> None:
        """Turn MFA off with a current code or a recovery code; Unauthenticated
        (MFA_CODE_INVALID, a failure the lockout counts), InvalidArgument (no factor or two),
        FailedPrecondition (REAUTHENTICATION_REQUIRED, MFA_NOT_ENABLED), the lockout's
        ResourceExhausted."""
        self._recent(principal)
        email = await self._email(principal)
        mfa = await self._store.mfa(principal.account_id)
        if not mfa.enabled:
            raise FailedPrecondition(
                message="two-step login is not on", reason=Reason.MFA_NOT_ENABLED
            )
        # Guessed codes count like failed logins: a stolen access token gets a few tries only.
        keys = self._defence.keys(email, device.client_ip)
        await self._defence.admit(keys, ask_captcha=False)
        if (
            await self._factor.spend(self._store, principal.account_id, mfa, code, recovery_code)
            is None
        ):
            await self._defence.failed(keys)
            raise wrong_code()
        await self._store.disable_mfa(
            self._event(principal, EventKind.MFA_DISABLED, device),
            self._mailer.compose(MailKind.MFA_DISABLED, email),
        )
        self._mailer.queued()

    async def regenerate_recovery_codes(self, principal: Principal, device: Device) -> list[str]:
        """Replace the recovery codes and return the new ones; FailedPrecondition
        (REAUTHENTICATION_REQUIRED, MFA_NOT_ENABLED)."""
        self._recent(principal)
        codes = new_recovery_codes()
        await self._store.replace_recovery_codes(
            self._event(principal, EventKind.RECOVERY_CODES_REGENERATED, device),
            [recovery_code_hash(c) for c in codes],
        )
        return codes

    def _recent(self, principal: Principal) -> None:
        """FailedPrecondition (REAUTHENTICATION_REQUIRED) unless the login is recent."""
        require_recent_authentication(principal, self._window, now=self._clock())

    def _expired(self, started_at: datetime | None) -> bool:
        """Whether an enrolment started then can no longer be confirmed."""
        if started_at is None:
            return True
        age = datetime.fromtimestamp(self._clock(), tz=UTC) - started_at
        return age.total_seconds() > self._enrollment_ttl

    async def _email(self, principal: Principal) -> str:
        """The caller's address, for the mail a change sends."""
        credentials = await self._accounts.get_credentials_by_id(principal.account_id)
        if credentials is None:
            raise NotFound(message="account not found", reason=Reason.ACCOUNT_NOT_FOUND)
        return credentials.account.email

    @staticmethod
    def _event(principal: Principal, kind: EventKind, device: Device) -> NewEvent:
        """The log entry of a change the caller made."""
        return NewEvent(
            account_id=principal.account_id,
            kind=kind,
            device=device,
            session_id=principal.session_id,
        )


def _already_enabled() -> FailedPrecondition:
    """The answer to enrolling while MFA is on."""
    return FailedPrecondition(
        message="two-step login is already on; turn it off first to use another app",
        reason=Reason.MFA_ALREADY_ENABLED,
    )


def _no_enrollment() -> NotFound:
    """The answer to confirming without a live enrolment."""
    return NotFound(
        message="no enrolment to confirm, or it expired: start it again",
        reason=Reason.MFA_ENROLLMENT_NOT_FOUND,
    )
