"""Password policy and hashing.

A password is NFKC-normalised (so the same passphrase typed on different keyboards matches), then
HMAC-SHA256'd with a server-side pepper and base64-encoded before bcrypt. The pre-hash gives bcrypt
a fixed 44-byte input: bcrypt 5 refuses inputs over 72 bytes, and long passphrases must still work.
The pepper also means a stolen database alone is not enough to start guessing passwords.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import unicodedata

import bcrypt

from meshkit.errors import FieldViolation, invalid

MIN_LENGTH = 8
MAX_LENGTH = 1024
FIELD = "password"

log = logging.getLogger(__name__)


def normalise(password: str) -> str:
    """Return the NFKC form of a password, the form that is measured and hashed."""
    return unicodedata.normalize("NFKC", password)


def policy_violations(password: str) -> list[FieldViolation]:
    """Return the violations of the password policy (8 to 1024 characters after NFKC)."""
    length = len(normalise(password))
    if length < MIN_LENGTH:
        return [FieldViolation(FIELD, f"must be at least {MIN_LENGTH} characters long")]
    if length > MAX_LENGTH:
        return [FieldViolation(FIELD, f"must be at most {MAX_LENGTH} characters long")]
    return []


def check_policy(password: str) -> None:
    """Raise InvalidArgument (field "password") when the password breaks the policy."""
    violations = policy_violations(password)
    if violations:
        raise invalid(violations)


class PasswordHasher:
    """Hashes and verifies peppered bcrypt hashes without blocking the event loop."""

    def __init__(self, pepper: str, rounds: int) -> None:
        if not pepper:
            raise ValueError("the password pepper must not be empty")
        self._pepper = pepper.encode()
        self._rounds = rounds
        # Verifying an unknown account runs bcrypt against this hash so that it costs as much as
        # verifying a real one: response time must not tell which emails are registered.
        self._dummy_hash = bcrypt.hashpw(b"meshgram-dummy-password", bcrypt.gensalt(rounds))

    async def hash(self, password: str) -> str:
        """Return the bcrypt hash (a "$2b$..." string) of a password; the policy is not checked."""
        prehashed = self._prehash(password)
        hashed = await asyncio.to_thread(bcrypt.hashpw, prehashed, bcrypt.gensalt(self._rounds))
        return hashed.decode("ascii")

    async def verify(self, password: str, stored_hash: str | None) -> bool:
        """Tell whether password matches stored_hash; None (unknown account) costs the same and
        returns False."""
        prehashed = self._prehash(password)
        if stored_hash is None:
            await asyncio.to_thread(bcrypt.checkpw, prehashed, self._dummy_hash)
            return False
        try:
            return await asyncio.to_thread(bcrypt.checkpw, prehashed, stored_hash.encode("ascii"))
        except ValueError:
            # A corrupt stored hash is our defect, not the client's: log it (never the hash) and
            # answer like a wrong password.
            log.error("stored password hash is not a valid bcrypt hash")
            return False

    def _prehash(self, password: str) -> bytes:
        """Return base64(HMAC-SHA256(pepper, NFKC(password))): 44 ASCII bytes, no NUL bytes."""
        digest = hmac.new(
            self._pepper, normalise(password).encode("utf-8"), hashlib.sha256
        ).digest()
        return base64.b64encode(digest)
