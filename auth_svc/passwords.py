"""Password policy and hashing.

The policy is a length range plus a strength estimate (zxcvbn, fed the account's email and
username), not composition rules: "correct horse battery staple" passes, "P@ssw0rd1" does not,
and a refused password is told why and what would help.

A password is NFKC-normalised (so the same passphrase typed on different keyboards matches), then
HMAC-SHA256'd with a server-side pepper and base64-encoded before bcrypt. The pre-hash gives bcrypt
a fixed 44-byte input: bcrypt 5 refuses inputs over 72 bytes, and long passphrases must still work.
The pepper also means a stolen database alone is not enough to start guessing passwords.

NFKC can make a string up to 18 times longer, so raw input far over the limit is refused before
it is normalised, and normalising and hashing run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import unicodedata

import bcrypt
from zxcvbn import zxcvbn

from meshkit.errors import FieldViolation

MIN_LENGTH = 8
MAX_LENGTH = 1024
# NFKC composes at most a few code points into one, so no raw input longer than this can
# normalise to MAX_LENGTH or fewer characters; it is refused unmeasured.
MAX_RAW_LENGTH = 4 * MAX_LENGTH
FIELD = "password"
DEFAULT_MIN_SCORE = 3
"""zxcvbn's "safely unguessable" (about 10^8 guesses or more); 0 turns the estimate off."""
# zxcvbn refuses longer input; a password's first 72 characters bound its strength from below.
_ESTIMATED_PREFIX = 72
_WORDS = re.compile(r"[^\W_]+")

log = logging.getLogger(__name__)


def normalise(password: str) -> str:
    """Return the NFKC form of a password, the form that is measured and hashed."""
    return unicodedata.normalize("NFKC", password)


def is_oversized(password: str) -> bool:
    """Tell whether a raw password is too long to be worth normalising (see MAX_RAW_LENGTH)."""
    return len(password) > MAX_RAW_LENGTH


def policy_violations(
    password: str,
    *,
    user_inputs: tuple[str, ...] = (),
    min_score: int = DEFAULT_MIN_SCORE,
    field: str = FIELD,
) -> list[FieldViolation]:
    """Return the violations of the password policy: 8 to 1024 characters after NFKC, and a
    zxcvbn score of at least min_score given the account's own words (user_inputs). CPU-bound
    for a few milliseconds: call it off the event loop."""
    too_long = [FieldViolation(field, f"must be at most {MAX_LENGTH} characters long")]
    if is_oversized(password):
        return too_long
    normal = normalise(password)
    if len(normal) < MIN_LENGTH:
        return [FieldViolation(field, f"must be at least {MIN_LENGTH} characters long")]
    if len(normal) > MAX_LENGTH:
        return too_long
    weakness = _weakness(normal, user_inputs, min_score)
    return [] if weakness is None else [FieldViolation(field, weakness)]


def _weakness(password: str, user_inputs: tuple[str, ...], min_score: int) -> str | None:
    """Say why a password is too easy to guess, or None when it is strong enough."""
    if min_score <= 0:
        return None
    # The email, its local part and domain, and every word in them count as words a guesser
    # would try first.
    words = {w for text in user_inputs for w in (text, *text.split("@"), *_WORDS.findall(text))}
    estimate = zxcvbn(password[:_ESTIMATED_PREFIX], user_inputs=sorted(w for w in words if w))
    if estimate["score"] >= min_score:
        return None
    feedback = estimate["feedback"]
    hints = [feedback.get("warning") or "", *feedback.get("suggestions", [])]
    advice = " ".join(hint.strip() for hint in hints if hint and hint.strip())
    message = "is too easy to guess"
    return f"{message}: {advice}" if advice else f"{message}; a few uncommon words make it stronger"


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
        hashed = await asyncio.to_thread(self._hash, password, bcrypt.gensalt(self._rounds))
        return hashed.decode("ascii")

    async def verify(self, password: str, stored_hash: str | None) -> bool:
        """Tell whether password matches stored_hash; None (unknown account) and an oversized
        password cost the same and return False."""
        oversized = is_oversized(password)
        if stored_hash is None or oversized:
            # Checked against the dummy hash so that it costs as much as a real check; an
            # oversized password matches no hash and is never normalised.
            await asyncio.to_thread(self._check, "" if oversized else password, self._dummy_hash)
            return False
        try:
            return await asyncio.to_thread(self._check, password, stored_hash.encode("ascii"))
        except ValueError:
            # A corrupt stored hash is our defect, not the client's: log it (never the hash) and
            # answer like a wrong password.
            log.error("stored password hash is not a valid bcrypt hash")
            return False

    def outdated(self, stored_hash: str) -> bool:
        """Whether a stored hash was made at another cost than the configured one."""
        parts = stored_hash.split("$")
        return len(parts) < 4 or not parts[2].isdigit() or int(parts[2]) != self._rounds

    def _hash(self, password: str, salt: bytes) -> bytes:
        """Pre-hash and bcrypt a password; blocking, for a worker thread."""
        return bcrypt.hashpw(self._prehash(password), salt)

    def _check(self, password: str, hashed: bytes) -> bool:
        """Pre-hash a password and check it against a bcrypt hash; blocking, for a worker thread."""
        return bcrypt.checkpw(self._prehash(password), hashed)

    def _prehash(self, password: str) -> bytes:
        """Return base64(HMAC-SHA256(pepper, NFKC(password))): 44 ASCII bytes, no NUL bytes."""
        digest = hmac.new(
            self._pepper, normalise(password).encode("utf-8"), hashlib.sha256
        ).digest()
        return base64.b64encode(digest)
