"""Access tokens round-trip through meshkit's verifier; the JWKS has the documented shape."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Iterable, Mapping

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth_svc import tokens
from auth_svc.tokens import AccessTokenSigner
from meshkit.access_tokens import AUDIENCE, ISSUER, AccessTokenVerifier
from meshkit.errors import Unauthenticated, Unavailable
from meshkit.reasons import Reason


@pytest.fixture(scope="module")
def signer() -> AccessTokenSigner:
    """A signer with a fresh key and the default 15-minute lifetime."""
    return AccessTokenSigner(Ed25519PrivateKey.generate(), ttl_seconds=900)


def verifier_for(*signers: AccessTokenSigner) -> AccessTokenVerifier:
    """A verifier whose JWKS holds the public keys of signers."""

    async def fetch() -> Iterable[Mapping[str, str]]:
        return [key for s in signers for key in s.jwks()]

    return AccessTokenVerifier(fetch)


async def test_round_trip(signer: AccessTokenSigner) -> None:
    issued = signer.issue("0b0e5d4c-0000-4000-8000-000000000001", "ann")
    assert issued.expires_in == 900
    principal = await verifier_for(signer).verify(issued.token)
    assert principal.account_id == "0b0e5d4c-0000-4000-8000-000000000001"
    assert principal.username == "ann"


def test_claims_and_header(signer: AccessTokenSigner) -> None:
    before = int(time.time())
    token = signer.issue("account-1", "ann").token
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == signer.kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"sub", "name", "iss", "aud", "iat", "exp", "jti"}
    assert claims["sub"] == "account-1"
    assert claims["name"] == "ann"
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert before <= claims["iat"] <= before + 2
    assert claims["exp"] == claims["iat"] + 900
    again = jwt.decode(signer.issue("account-1", "ann").token, options={"verify_signature": False})
    assert claims["jti"] != again["jti"]


async def test_tampered_token_is_invalid(signer: AccessTokenSigner) -> None:
    header, payload, signature = signer.issue("account-1", "ann").token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "account-2"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated) as caught:
        await verifier_for(signer).verify(f"{header}.{forged}.{signature}")
    assert caught.value.reason == Reason.TOKEN_INVALID


async def test_token_of_another_key_is_invalid(signer: AccessTokenSigner) -> None:
    stranger = AccessTokenSigner(Ed25519PrivateKey.generate(), ttl_seconds=900)
    with pytest.raises(Unauthenticated) as caught:
        await verifier_for(signer).verify(stranger.issue("account-1", "ann").token)
    assert caught.value.reason == Reason.TOKEN_INVALID


async def test_expired_token_fails() -> None:
    key = Ed25519PrivateKey.generate()
    past = AccessTokenSigner(key, ttl_seconds=60, clock=lambda: time.time() - 3600)
    with pytest.raises(Unauthenticated) as caught:
        await verifier_for(past).verify(past.issue("account-1", "ann").token)
    assert caught.value.reason == Reason.TOKEN_EXPIRED


class Jwks:
    """A JWKS endpoint under the test's control: which signers it publishes, whether it is down,
    how often it was asked."""

    def __init__(self, *signers: AccessTokenSigner) -> None:
        self.signers = list(signers)
        self.down = False
        self.calls = 0

    async def fetch(self) -> Iterable[Mapping[str, str]]:
        self.calls += 1
        if self.down:
            raise Unavailable(message="auth_svc is down", reason=Reason.DEPENDENCY_UNAVAILABLE)
        return [key for s in self.signers for key in s.jwks()]


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_signer() -> AccessTokenSigner:
    return AccessTokenSigner(Ed25519PrivateKey.generate(), ttl_seconds=900)


async def test_cached_token_is_refused_once_its_key_left_the_jwks() -> None:
    retired, current = new_signer(), new_signer()
    jwks = Jwks(retired)
    clock = Clock()
    verifier = AccessTokenVerifier(jwks.fetch, min_refetch_seconds=30, monotonic=clock)
    old_token = retired.issue("account-1", "ann").token
    await verifier.verify(old_token)  # now cached

    # auth_svc replaces its key; a token of the new key makes the verifier refetch.
    jwks.signers = [current]
    clock.now += 31
    await verifier.verify(current.issue("account-2", "bob").token)

    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(old_token)
    assert caught.value.reason == Reason.TOKEN_INVALID


async def test_failed_jwks_fetch_is_rate_limited_and_keeps_the_keys() -> None:
    known, rotated = new_signer(), new_signer()
    jwks = Jwks(known)
    clock = Clock()
    verifier = AccessTokenVerifier(jwks.fetch, min_refetch_seconds=30, monotonic=clock)
    cached = known.issue("account-1", "ann").token
    await verifier.verify(cached)
    assert jwks.calls == 1

    jwks.down = True
    clock.now += 31
    unknown = rotated.issue("account-2", "bob").token
    with pytest.raises(Unavailable):
        await verifier.verify(unknown)  # the one refetch, which fails
    assert jwks.calls == 2

    # Within the interval nobody asks the failing auth_svc again, concurrent callers included;
    # unknown kids are answered as retryable, not as invalid tokens.
    results = await asyncio.gather(
        *(verifier.verify(unknown) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, Unavailable) for r in results)
    assert jwks.calls == 2
    # The keys fetched before the outage still verify, from cache and afresh.
    assert (await verifier.verify(cached)).username == "ann"
    assert (await verifier.verify(known.issue("account-3", "cy").token)).username == "cy"

    # Once the interval has passed the next unknown kid refetches, and recovery is picked up.
    jwks.down = False
    jwks.signers = [known, rotated]
    clock.now += 31
    assert (await verifier.verify(unknown)).username == "bob"
    assert jwks.calls == 3


async def test_jwks_unreachable_from_the_start_is_asked_once_per_interval() -> None:
    signer = new_signer()
    jwks = Jwks(signer)
    jwks.down = True
    clock = Clock()
    verifier = AccessTokenVerifier(jwks.fetch, min_refetch_seconds=30, monotonic=clock)
    token = signer.issue("account-1", "ann").token

    for _ in range(3):
        with pytest.raises(Unavailable):
            await verifier.verify(token)
    assert jwks.calls == 1

    jwks.down = False
    clock.now += 31
    assert (await verifier.verify(token)).username == "ann"
    assert jwks.calls == 2


async def settle() -> None:
    """Let background tasks (a JWKS fetch started without waiting) run to completion."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_unknown_kids_make_one_fetch_at_a_time_and_at_most_one_a_second() -> None:
    known = new_signer()
    jwks = Jwks(known)
    clock = Clock()
    verifier = AccessTokenVerifier(jwks.fetch, monotonic=clock)
    await verifier.verify(known.issue("account-1", "ann").token)
    assert jwks.calls == 1

    # A burst of tokens under kids nobody published (forged, or garbage): one fetch, shared.
    clock.now += 1
    forged = [new_signer().issue("account-1", "ann").token for _ in range(20)]
    results = await asyncio.gather(*(verifier.verify(t) for t in forged), return_exceptions=True)
    assert all(isinstance(r, Unauthenticated) and r.reason == Reason.TOKEN_INVALID for r in results)
    assert jwks.calls == 2
    # More within the second: no fetch.
    clock.now += 0.5
    with pytest.raises(Unauthenticated):
        await verifier.verify(new_signer().issue("account-1", "ann").token)
    assert jwks.calls == 2

    # A real new key, a second later, is fetched at once.
    rotated = new_signer()
    jwks.signers.append(rotated)
    clock.now += 0.5
    assert (await verifier.verify(rotated.issue("account-2", "bob").token)).username == "bob"
    assert jwks.calls == 3


async def test_failing_fetches_back_off() -> None:
    signer = new_signer()
    jwks = Jwks(signer)
    jwks.down = True
    clock = Clock()
    verifier = AccessTokenVerifier(
        jwks.fetch, min_refetch_seconds=1, max_backoff_seconds=8, monotonic=clock
    )
    token = signer.issue("account-1", "ann").token
    fetched_at = []
    for _ in range(40):
        calls = jwks.calls
        with pytest.raises(Unavailable):
            await verifier.verify(token)
        if jwks.calls > calls:
            fetched_at.append(clock.now - 1000)
        clock.now += 1
    # After each failure the pause doubles (2, 4, 8 s), up to the maximum.
    assert fetched_at == [0, 2, 6, 14, 22, 30, 38]

    jwks.down = False
    clock.now += 8
    assert (await verifier.verify(token)).username == "ann"
    # Success resets the pace: the next unknown kid may fetch a second later.
    clock.now += 1
    calls = jwks.calls
    with pytest.raises(Unauthenticated):
        await verifier.verify(new_signer().issue("account-2", "bob").token)
    assert jwks.calls == calls + 1


async def test_keys_are_refreshed_in_the_background_so_a_new_key_is_known_before_it_signs() -> None:
    current, upcoming = new_signer(), new_signer()
    jwks = Jwks(current)
    clock = Clock()
    verifier = AccessTokenVerifier(jwks.fetch, refresh_seconds=60, monotonic=clock)
    token = current.issue("account-1", "ann").token
    await verifier.verify(token)
    assert jwks.calls == 1

    # auth_svc publishes the next key ahead of its activation.
    jwks.signers.append(upcoming)
    clock.now += 59
    await verifier.verify(token)
    await settle()
    assert jwks.calls == 1  # not due yet
    clock.now += 1
    await verifier.verify(token)  # answered from cache; the refresh starts behind it
    await settle()
    assert jwks.calls == 2

    # The first token of the new key needs no fetch: the key is known already.
    assert (await verifier.verify(upcoming.issue("account-2", "bob").token)).username == "bob"
    assert jwks.calls == 2


async def test_verifying_never_waits_for_a_background_refresh() -> None:
    signer = new_signer()
    release = asyncio.Event()
    calls = 0

    async def slow_fetch() -> Iterable[Mapping[str, str]]:
        nonlocal calls
        calls += 1
        if calls > 1:
            await release.wait()
        return signer.jwks()

    clock = Clock()
    verifier = AccessTokenVerifier(slow_fetch, refresh_seconds=60, monotonic=clock)
    await verifier.verify(signer.issue("account-1", "ann").token)
    clock.now += 61
    async with asyncio.timeout(1):
        await verifier.verify(signer.issue("account-2", "bob").token)
        await settle()
        assert calls == 2  # the refresh is under way, and hangs
        # Known keys still verify at once, cached or not.
        await verifier.verify(signer.issue("account-2", "bob").token)
        await verifier.verify(signer.issue("account-3", "cy").token)
    assert calls == 2
    release.set()
    await settle()


async def test_an_idle_verifier_is_refreshed_by_its_readiness_probe() -> None:
    current, upcoming = new_signer(), new_signer()
    jwks = Jwks(current)
    clock = Clock()
    verifier = AccessTokenVerifier(jwks.fetch, refresh_seconds=60, monotonic=clock)
    assert await verifier.ensure_keys()
    assert jwks.calls == 1
    jwks.signers.append(upcoming)
    clock.now += 60
    assert await verifier.ensure_keys()
    await settle()
    assert jwks.calls == 2
    assert (await verifier.verify(upcoming.issue("account-1", "ann").token)).username == "ann"
    assert jwks.calls == 2


async def test_a_caller_giving_up_does_not_cancel_the_fetch_of_the_others() -> None:
    known, rotated = new_signer(), new_signer()
    release = asyncio.Event()

    async def slow_fetch() -> Iterable[Mapping[str, str]]:
        await release.wait()
        return [*known.jwks(), *rotated.jwks()]

    verifier = AccessTokenVerifier(slow_fetch)
    token = rotated.issue("account-1", "ann").token
    impatient = asyncio.create_task(verifier.verify(token))
    patient = asyncio.create_task(verifier.verify(token))
    await settle()
    impatient.cancel()
    await settle()
    release.set()
    assert (await patient).username == "ann"
    assert impatient.cancelled()


def test_jwks_shape(signer: AccessTokenSigner) -> None:
    (key,) = signer.jwks()
    assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert key["kty"] == "OKP"
    assert key["crv"] == "Ed25519"
    assert key["alg"] == "EdDSA"
    assert key["use"] == "sig"
    assert key["kid"] == signer.kid
    assert "=" not in key["x"]
    assert len(base64.urlsafe_b64decode(key["x"] + "=")) == 32
    # RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": key["x"]}, separators=(",", ":"))
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=")
    assert key["kid"] == expected.decode()
    jwt.PyJWK(key, algorithm="EdDSA")  # pyjwt accepts it as a verification key


def test_refresh_tokens_are_random_and_stored_only_as_hashes() -> None:
    now = time.time()
    first = tokens.new_token(3600, clock=lambda: now)
    second = tokens.new_token(3600, clock=lambda: now)
    assert first.token != second.token
    assert len(base64.urlsafe_b64decode(first.token + "=")) == 32
    assert first.token_hash == hashlib.sha256(first.token.encode()).hexdigest()
    assert first.token_hash == tokens.hash_token(first.token)
    assert first.expires_in == 3600
    assert first.expires_at.timestamp() == pytest.approx(now + 3600)
    assert first.expires_at.tzinfo is not None
