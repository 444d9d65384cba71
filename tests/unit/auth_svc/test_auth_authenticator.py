"""The AuthService flows against an in-memory account store (no network, no database)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth_svc.accounts import (
    Account,
    Device,
    MailedToken,
    MailKind,
    NewSession,
    Rotated,
    SealedMail,
    SessionStart,
    StoredCredentials,
    TakenNotice,
)
from auth_svc.authenticator import INVALID_CREDENTIALS_MESSAGE, Authenticator, SessionPolicy
from auth_svc.passwords import PasswordHasher
from auth_svc.tokens import AccessTokenSigner, successor_refresh_token
from auth_svc.verification import EmailVerification
from meshkit.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from meshkit.reasons import Reason
from meshkit.settings import UnverifiedEmailMay


@dataclass
class _Token:
    account: Account
    family: str
    consumed: bool = False
    successor: str = ""


@dataclass
class _Session:
    started_at: datetime
    ends_at: datetime
    remembered: bool
    device: Device


@dataclass
class MemoryMailer:
    """Records what would be mailed, in clear, instead of sealing it."""

    composed: list[tuple[MailKind, str, str]] = field(default_factory=list)
    wakes: int = 0

    def compose(self, kind: MailKind, to: str, *, token: str = "") -> SealedMail:
        self.composed.append((kind, to, token))
        return SealedMail(kind=kind.value, sealed=b"sealed")

    def queued(self) -> None:
        self.wakes += 1


@dataclass
class MemoryStore:
    """Follows AccountStoreService's documented behaviour, in memory (the parts these flows use)."""

    accounts: dict[str, StoredCredentials] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    lookups: list[str] = field(default_factory=list)
    verification_hashes: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    async def create_account(
        self,
        email: str,
        username: str,
        password_hash: str,
        verification: MailedToken | None,
        if_email_taken: TakenNotice | None = None,
    ) -> Account:
        if any(c.account.username == username for c in self.accounts.values()):
            raise AlreadyExists(message="username is taken", reason=Reason.USERNAME_TAKEN)
        if email in self.accounts:
            if if_email_taken is not None:
                self.notices.append(email)
            raise AlreadyExists(message="email is taken", reason=Reason.EMAIL_TAKEN)
        account = Account(id=str(uuid.uuid4()), email=email, username=username)
        self.accounts[email] = StoredCredentials(account, password_hash)
        if verification is not None:
            self.verification_hashes.append(verification.token_hash)
        return account

    async def get_credentials(self, email: str) -> StoredCredentials | None:
        self.lookups.append(email)
        return self.accounts.get(email)

    async def create_session(self, account_id: str, session: NewSession) -> SessionStart:
        account = next(c.account for c in self.accounts.values() if c.account.id == account_id)
        family = str(uuid.uuid4())
        now = datetime.now(UTC)
        self.sessions[family] = _Session(now, session.ends_at, session.remembered, session.device)
        self.tokens[session.token_hash] = _Token(account, family)
        return SessionStart(session_id=family, started_at=now)

    async def rotate_refresh_token(
        self,
        token_hash: str,
        new_token_hash: str,
        new_expires_at: datetime,
        *,
        reuse_window_seconds: float = 0.0,
        device: Device | None = None,
    ) -> Rotated:
        token = self.tokens.get(token_hash)
        if token is None or token.family in self.revoked:
            raise NotFound(message="unknown", reason=Reason.REFRESH_TOKEN_INVALID)
        session = self.sessions[token.family]
        rotated = Rotated(
            token.account, new_expires_at, token.family, session.started_at, session.remembered
        )
        if token.consumed:
            # A repeat of the same rotation (same successor) inside the window is accepted.
            if reuse_window_seconds > 0 and token.successor == new_token_hash:
                return rotated
            self.revoked.add(token.family)
            raise FailedPrecondition(message="reused", reason=Reason.REFRESH_TOKEN_REUSED)
        token.consumed = True
        token.successor = new_token_hash
        self.tokens[new_token_hash] = _Token(token.account, token.family)
        return rotated

    async def revoke_refresh_token(self, token_hash: str) -> None:
        token = self.tokens.get(token_hash)
        if token is not None:
            self.revoked.add(token.family)

    async def replace_password_hash(self, account_id: str, old_hash: str, new_hash: str) -> bool:
        for email, stored in self.accounts.items():
            if stored.account.id == account_id and stored.password_hash == old_hash:
                self.accounts[email] = StoredCredentials(stored.account, new_hash)
                return True
        return False


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def mailer() -> MemoryMailer:
    return MemoryMailer()


def authenticator(
    store: MemoryStore,
    mailer: MemoryMailer | None = None,
    *,
    rounds: int = 4,
    reuse_window_seconds: float = 0.0,
    unverified_email_may: UnverifiedEmailMay = "edit_profile",
    min_score: int = 0,
) -> Authenticator:
    """An Authenticator over the in-memory store with cheap hashing."""
    return Authenticator(
        store,  # type: ignore[arg-type]  # implements only what these flows call
        PasswordHasher("unit-pepper", rounds=rounds),
        AccessTokenSigner(Ed25519PrivateKey.generate(), ttl_seconds=900),
        sessions=SessionPolicy(
            idle_seconds=3600,
            successor_key=b"unit-successor-key",
            reuse_window_seconds=reuse_window_seconds,
            short_seconds=1800,
            max_seconds=7200,
        ),
        verification=EmailVerification(
            store,  # type: ignore[arg-type]
            mailer or MemoryMailer(),
            ttl_seconds=86_400,
            cooldown_seconds=60,
        ),
        unverified_email_may=unverified_email_may,
        password_min_score=min_score,
    )


@pytest.fixture
def auth(store: MemoryStore, mailer: MemoryMailer) -> Authenticator:
    return authenticator(store, mailer)


async def test_register_queues_a_verification_mail_whose_token_is_stored_hashed(
    auth: Authenticator, store: MemoryStore, mailer: MemoryMailer
) -> None:
    await auth.register("Ann@Example.com", "Ann", "a fine password")
    # The notice for a registered email is made too (and dropped): both outcomes cost the same.
    assert [kind for kind, _, _ in mailer.composed] == [
        MailKind.VERIFY_EMAIL,
        MailKind.SIGNUP_ATTEMPT,
    ]
    [(_, to, token)] = [m for m in mailer.composed if m[0] is MailKind.VERIFY_EMAIL]
    assert (to, mailer.wakes) == ("ann@example.com", 1)
    assert store.verification_hashes == [hashlib.sha256(token.encode()).hexdigest()]


async def test_a_guessable_password_is_refused_with_the_reason(store: MemoryStore) -> None:
    auth = authenticator(store, min_score=3)
    with pytest.raises(InvalidArgument) as caught:
        await auth.register("ann@example.com", "annabel", "annabel1990")
    [violation] = caught.value.violations
    assert violation.field == "password"
    assert violation.description.startswith("is too easy to guess")
    assert store.accounts == {}
    await auth.register("ann@example.com", "annabel", "maple quartz lantern orbit")


async def test_remember_me_decides_the_session_lifetime(
    auth: Authenticator, store: MemoryStore
) -> None:
    await auth.register("ann@example.com", "ann", "a fine password")
    short = await auth.login("ann@example.com", "a fine password")
    long = await auth.login("ann@example.com", "a fine password", remember_me=True)
    assert (short.remembered, long.remembered) == (False, True)
    lives = {
        pair.session_id: store.sessions[pair.session_id].ends_at
        - store.sessions[pair.session_id].started_at
        for pair in (short, long)
    }
    assert round(lives[short.session_id].total_seconds()) == 1800
    assert round(lives[long.session_id].total_seconds()) == 7200
    # A short session's refresh token never outlives the session itself.
    assert (short.refresh_expires_in, long.refresh_expires_in) == (1800, 3600)


async def test_unverified_accounts_cannot_sign_in_when_the_deployment_says_so(
    store: MemoryStore,
) -> None:
    auth = authenticator(store, unverified_email_may="nothing")
    await auth.register("ann@example.com", "ann", "a fine password")
    with pytest.raises(FailedPrecondition) as caught:
        await auth.login("ann@example.com", "a fine password")
    assert caught.value.reason == Reason.EMAIL_NOT_VERIFIED
    # A wrong password still gets the answer every stranger gets.
    with pytest.raises(Unauthenticated):
        await auth.login("ann@example.com", "not the password")


async def test_access_tokens_name_their_session(auth: Authenticator) -> None:
    await auth.register("ann@example.com", "ann", "a fine password")
    pair = await auth.login("ann@example.com", "a fine password")
    claims = jwt.decode(pair.access_token, options={"verify_signature": False})
    assert claims["sid"] == pair.session_id
    assert claims["email_verified"] is False
    refreshed = await auth.refresh(pair.refresh_token)
    again = jwt.decode(refreshed.access_token, options={"verify_signature": False})
    assert (again["sid"], again["auth_time"]) == (pair.session_id, claims["auth_time"])


async def test_register_stores_normalised_account_and_a_hash(
    auth: Authenticator, store: MemoryStore
) -> None:
    account = await auth.register("Ann@Example.com", "Ann", "a fine password")
    assert (account.email, account.username) == ("ann@example.com", "ann")
    stored = store.accounts["ann@example.com"].password_hash
    assert stored.startswith("$2b$")
    assert "a fine password" not in stored


async def test_register_reports_all_violations_before_touching_the_store(
    auth: Authenticator, store: MemoryStore
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await auth.register("bad", "x", "short")
    assert {v.field for v in caught.value.violations} == {"email", "username", "password"}
    assert store.accounts == {}


async def test_login_refresh_reuse_logout(auth: Authenticator, store: MemoryStore) -> None:
    await auth.register("ann@example.com", "ann", "a fine password")
    first = await auth.login("ANN@example.com", "a fine password")
    assert first.token_type == "Bearer"
    assert (first.expires_in, first.refresh_expires_in) == (900, 1800)
    assert hashlib.sha256(first.refresh_token.encode()).hexdigest() in store.tokens

    second = await auth.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token

    with pytest.raises(Unauthenticated) as reused:
        await auth.refresh(first.refresh_token)
    assert reused.value.reason == Reason.REFRESH_TOKEN_REUSED
    with pytest.raises(Unauthenticated) as revoked:
        await auth.refresh(second.refresh_token)
    assert revoked.value.reason == Reason.REFRESH_TOKEN_INVALID

    third = await auth.login("ann@example.com", "a fine password")
    await auth.logout(third.refresh_token)
    await auth.logout(third.refresh_token)
    with pytest.raises(Unauthenticated) as after_logout:
        await auth.refresh(third.refresh_token)
    assert after_logout.value.reason == Reason.REFRESH_TOKEN_INVALID


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("ann@example.com", "the wrong password"),
        ("nobody@example.com", "a fine password"),
        ("", "a fine password"),
        ("not an email", "a fine password"),
        ("ann@example.com", ""),
        ("ann@example.com", "a fine password" * 10_000),
        ("nobody@example.com", "\ufdfa" * 1_000_000),
    ],
)
async def test_login_failures_are_indistinguishable(
    auth: Authenticator, email: str, password: str
) -> None:
    await auth.register("ann@example.com", "ann", "a fine password")
    with pytest.raises(Unauthenticated) as caught:
        await auth.login(email, password)
    assert caught.value.reason == Reason.INVALID_CREDENTIALS
    assert caught.value.message == INVALID_CREDENTIALS_MESSAGE


async def test_refresh_with_empty_or_unknown_token(auth: Authenticator) -> None:
    for token in ("", "never-issued"):
        with pytest.raises(Unauthenticated) as caught:
            await auth.refresh(token)
        assert caught.value.reason == Reason.REFRESH_TOKEN_INVALID


async def test_logout_of_unknown_or_empty_token_succeeds(auth: Authenticator) -> None:
    await auth.logout("")
    await auth.logout("never-issued")


async def test_a_refresh_repeated_within_the_window_gets_the_same_refresh_token(
    store: MemoryStore,
) -> None:
    auth = authenticator(store, reuse_window_seconds=5)
    await auth.register("ann@example.com", "ann", "a fine password")
    first = await auth.login("ann@example.com", "a fine password")
    tab_one = await auth.refresh(first.refresh_token)
    tab_two = await auth.refresh(first.refresh_token)
    # Both tabs hold the same successor, and it works: the session lives on.
    assert tab_one.refresh_token == tab_two.refresh_token != first.refresh_token
    assert (await auth.refresh(tab_two.refresh_token)).refresh_token != tab_two.refresh_token


def test_successors_depend_on_the_token_and_the_key_alone() -> None:
    one = successor_refresh_token("token-a", b"key-1", 60, clock=lambda: 0.0)
    assert one.token == successor_refresh_token("token-a", b"key-1", 600, clock=lambda: 9.0).token
    assert one.token != successor_refresh_token("token-b", b"key-1", 60, clock=lambda: 0.0).token
    assert one.token != successor_refresh_token("token-a", b"key-2", 60, clock=lambda: 0.0).token
    assert len(one.token) == 43  # 256 bits in base64url, like a token issued at login


async def test_login_rehashes_a_password_hashed_at_an_older_cost(store: MemoryStore) -> None:
    def at_cost(rounds: int) -> Authenticator:
        return authenticator(store, rounds=rounds)

    await at_cost(4).register("ann@example.com", "ann", "a fine password")
    assert store.accounts["ann@example.com"].password_hash.startswith("$2b$04$")
    # The cost setting was raised: the next login stores a hash at the new cost.
    await at_cost(5).login("ann@example.com", "a fine password")
    rehashed = store.accounts["ann@example.com"].password_hash
    assert rehashed.startswith("$2b$05$")
    await at_cost(5).login("ann@example.com", "a fine password")
    assert store.accounts["ann@example.com"].password_hash == rehashed
    # A wrong password changes nothing.
    with pytest.raises(Unauthenticated):
        await at_cost(6).login("ann@example.com", "not the password")
    assert store.accounts["ann@example.com"].password_hash == rehashed


async def test_a_registered_email_gets_a_new_accounts_answer_and_its_owner_a_notice(
    auth: Authenticator, store: MemoryStore
) -> None:
    first = await auth.register("ann@example.com", "ann", "a fine password")
    again = await auth.register("ANN@example.com", "annie", "another fine password")
    assert (again.email, again.username, again.email_verified) == (
        "ann@example.com",
        "annie",
        False,
    )
    assert again.id != first.id
    assert store.notices == ["ann@example.com"]
    assert [c.account.username for c in store.accounts.values()] == ["ann"]
    with pytest.raises(AlreadyExists) as taken:
        await auth.register("bob@example.com", "ann", "a fine password")
    assert taken.value.reason == Reason.USERNAME_TAKEN
