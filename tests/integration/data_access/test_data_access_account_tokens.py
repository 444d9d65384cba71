"""AccountStoreService's single-use mailed tokens (email verification, password reset) and the
mails queued with them, against the real database (the private one: no sender takes the mails)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text

from data_access.database import Database
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from meshkit.timestamps import to_timestamp
from tests.helpers import Metadata, error_info, failure_of

pytestmark = pytest.mark.integration

VERIFY = pb.ACCOUNT_TOKEN_PURPOSE_VERIFY_EMAIL
RESET = pb.ACCOUNT_TOKEN_PURPOSE_RESET_PASSWORD
DAY = timedelta(days=1)
INVALID = (grpc.StatusCode.NOT_FOUND, "ACCOUNT_TOKEN_INVALID")


def _hash() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def _in(delta: timedelta) -> Timestamp:
    return to_timestamp(datetime.now(UTC) + delta)


def _token(token_hash: str, ttl: timedelta = DAY) -> pb.NewAccountToken:
    return pb.NewAccountToken(token_hash=token_hash, expire_time=_in(ttl))


def _mail(kind: str | None = None) -> pb.SealedMail:
    """A mail of a kind no other test uses (so its outbox rows are this test's)."""
    return pb.SealedMail(kind=kind or f"k_{uuid.uuid4().hex}", sealed=secrets.token_bytes(48))


@dataclass
class Tokens:
    """The private data_access's account tokens and its database, as auth_svc uses them."""

    store: pb_grpc.AccountStoreServiceAsyncStub
    metadata: Metadata
    database: Database

    async def register(self, verification: str | None = None) -> pb.AccountRecord:
        """Create a unique account, with an email verification token when given."""
        unique = uuid.uuid4().hex[:16]
        request = pb.CreateAccountRequest(
            email=f"{unique}@example.com", username=f"u_{unique}", password_hash="$2b$04$x"
        )
        if verification is not None:
            request.verification.CopyFrom(_token(verification))
            request.mail.CopyFrom(_mail())
        created = await self.store.CreateAccount(request, metadata=self.metadata)
        return created.account

    async def issue(
        self,
        email: str,
        purpose: pb.AccountTokenPurpose.ValueType,
        token_hash: str,
        *,
        mail: pb.SealedMail | None = None,
        cooldown: timedelta | None = None,
        ttl: timedelta = DAY,
    ) -> None:
        """Ask for a token for whoever owns email."""
        request = pb.IssueAccountTokenRequest(
            email=email, purpose=purpose, token=_token(token_hash, ttl), mail=mail or _mail()
        )
        if cooldown is not None:
            request.cooldown.FromTimedelta(cooldown)
        response = await self.store.IssueAccountToken(request, metadata=self.metadata)
        assert response == pb.IssueAccountTokenResponse()

    async def lookup(
        self, token_hash: str, purpose: pb.AccountTokenPurpose.ValueType
    ) -> pb.AccountRecord:
        """The account of a usable token."""
        found = await self.store.LookupAccountToken(
            pb.LookupAccountTokenRequest(token_hash=token_hash, purpose=purpose),
            metadata=self.metadata,
        )
        return found.account

    async def use(
        self,
        token_hash: str,
        purpose: pb.AccountTokenPurpose.ValueType,
        new_password_hash: str = "",
        mail: pb.SealedMail | None = None,
    ) -> pb.AccountRecord:
        """Use a token up."""
        used = await self.store.UseAccountToken(
            pb.UseAccountTokenRequest(
                token_hash=token_hash,
                purpose=purpose,
                new_password_hash=new_password_hash,
                mail=mail,
            ),
            metadata=self.metadata,
        )
        return used.account

    async def invalid(self, token_hash: str, purpose: pb.AccountTokenPurpose.ValueType) -> bool:
        """Whether a token is refused both by a lookup and by a use."""
        looked = await failure_of(self.lookup(token_hash, purpose))
        used = await failure_of(self.use(token_hash, purpose, "$2b$04$never"))
        return (looked.code, looked.reason) == (used.code, used.reason) == INVALID

    async def credentials(self, email: str) -> pb.GetCredentialsResponse:
        """The stored account and password hash of email."""
        return await self.store.GetCredentials(
            pb.GetCredentialsRequest(email=email), metadata=self.metadata
        )

    async def queued(self, kind: str) -> list[bytes]:
        """The sealed content of the queued mails of a kind, oldest first."""
        async with self.database.transaction() as session:
            rows = await session.execute(
                text("SELECT sealed FROM outbox WHERE kind = :kind ORDER BY id"), {"kind": kind}
            )
            return [row.sealed for row in rows]

    async def execute(self, statement: str, **params: object) -> None:
        """Run one statement on the private database (for what no RPC does)."""
        async with self.database.transaction() as session:
            await session.execute(text(statement), params)


@pytest.fixture
def tokens(
    private_accounts: pb_grpc.AccountStoreServiceAsyncStub,
    as_auth: Metadata,
    private_database: Database,
) -> Tokens:
    """The private data_access's account tokens."""
    return Tokens(private_accounts, as_auth, private_database)


async def _login(tokens: Tokens, account_id: str) -> str:
    """Start a session of account_id; return its refresh token hash."""
    token = _hash()
    await tokens.store.CreateRefreshToken(
        pb.CreateRefreshTokenRequest(
            account_id=account_id,
            token_hash=token,
            expire_time=_in(DAY),
            session_end_time=_in(30 * DAY),
        ),
        metadata=tokens.metadata,
    )
    return token


async def test_an_account_its_verification_token_and_its_mail_are_stored_together(
    tokens: Tokens,
) -> None:
    unique = uuid.uuid4().hex[:16]
    token = _hash()
    mail = _mail()

    created = await tokens.store.CreateAccount(
        pb.CreateAccountRequest(
            email=f"{unique}@example.com",
            username=f"u_{unique}",
            password_hash="h",
            verification=_token(token),
            mail=mail,
        ),
        metadata=tokens.metadata,
    )

    assert not created.account.email_verified
    assert await tokens.lookup(token, VERIFY) == created.account
    assert await tokens.queued(mail.kind) == [mail.sealed]


async def test_a_mail_that_cannot_be_queued_leaves_no_account_and_no_token(
    tokens: Tokens,
) -> None:
    refused = f"refused_{uuid.uuid4().hex[:12]}"
    # Only this test's mails are refused, by the database itself.
    await tokens.execute(
        f"CREATE FUNCTION {refused}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.kind = '{refused}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END; $$"
    )
    await tokens.execute(
        f"CREATE TRIGGER {refused} BEFORE INSERT ON outbox "
        f"FOR EACH ROW EXECUTE FUNCTION {refused}()"
    )
    unique = uuid.uuid4().hex[:16]
    email = f"{unique}@example.com"
    token = _hash()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await tokens.store.CreateAccount(
                pb.CreateAccountRequest(
                    email=email,
                    username=f"u_{unique}",
                    password_hash="h",
                    verification=_token(token),
                    mail=_mail(refused),
                ),
                metadata=tokens.metadata,
            )
    finally:
        await tokens.execute(f"DROP TRIGGER {refused} ON outbox")
        await tokens.execute(f"DROP FUNCTION {refused}()")

    assert caught.value.code() == grpc.StatusCode.INTERNAL
    missing = await failure_of(tokens.credentials(email))
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")
    assert await tokens.invalid(token, VERIFY)


async def test_a_verification_marks_the_address_verified_and_works_once(tokens: Tokens) -> None:
    token = _hash()
    account = await tokens.register(verification=token)

    verified = await tokens.use(token, VERIFY)

    assert verified.email_verified
    assert verified.id == account.id
    assert (await tokens.credentials(account.email)).account.email_verified
    assert await tokens.invalid(token, VERIFY)


@pytest.mark.parametrize("purpose", [VERIFY, RESET], ids=["verify", "reset"])
async def test_of_twenty_concurrent_uses_of_one_token_exactly_one_succeeds(
    tokens: Tokens, purpose: pb.AccountTokenPurpose.ValueType
) -> None:
    account = await tokens.register()
    token = _hash()
    await tokens.issue(account.email, purpose, token)

    outcomes = await asyncio.gather(
        *(tokens.use(token, purpose, f"$2b$04$attempt{i}") for i in range(20)),
        return_exceptions=True,
    )

    winners = [o for o in outcomes if isinstance(o, pb.AccountRecord)]
    losers = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert len(losers) == 19
    assert {(e.code(), error_info(e).reason) for e in losers} == {INVALID}
    if purpose == RESET:
        stored = (await tokens.credentials(account.email)).password_hash
        assert stored == f"$2b$04$attempt{outcomes.index(winners[0])}"


async def test_a_token_is_stored_only_for_an_eligible_account_and_answered_alike(
    tokens: Tokens,
) -> None:
    account = await tokens.register()
    unknown, known = _mail(), _mail()
    unknown_token, known_token = _hash(), _hash()

    await tokens.issue(f"{uuid.uuid4().hex}@example.com", RESET, unknown_token, mail=unknown)
    await tokens.issue(account.email.upper(), RESET, known_token, mail=known)

    assert await tokens.queued(unknown.kind) == []
    assert await tokens.invalid(unknown_token, RESET)
    assert await tokens.queued(known.kind) == [known.sealed]
    assert await tokens.lookup(known_token, RESET) == account


async def test_no_second_token_of_a_purpose_within_the_cooldown(tokens: Tokens) -> None:
    account = await tokens.register()
    first, second, third = _hash(), _hash(), _hash()
    mails = [_mail(), _mail(), _mail()]

    await tokens.issue(account.email, RESET, first, mail=mails[0], cooldown=timedelta(minutes=1))
    await tokens.issue(account.email, RESET, second, mail=mails[1], cooldown=timedelta(minutes=1))
    # Another purpose has a cooldown of its own.
    await tokens.issue(account.email, VERIFY, third, mail=mails[2], cooldown=timedelta(minutes=1))

    assert [len(await tokens.queued(mail.kind)) for mail in mails] == [1, 0, 1]
    assert await tokens.lookup(first, RESET) == account
    assert await tokens.invalid(second, RESET)
    assert await tokens.lookup(third, VERIFY) == account


async def test_concurrent_requests_within_the_cooldown_store_one_token(tokens: Tokens) -> None:
    account = await tokens.register()
    kind = f"k_{uuid.uuid4().hex}"

    await asyncio.gather(
        *(
            tokens.issue(
                account.email, RESET, _hash(), mail=_mail(kind), cooldown=timedelta(minutes=1)
            )
            for _ in range(10)
        )
    )

    assert len(await tokens.queued(kind)) == 1


async def test_no_verification_is_issued_for_a_verified_address(tokens: Tokens) -> None:
    first = _hash()
    account = await tokens.register(verification=first)
    await tokens.use(first, VERIFY)
    again, mail = _hash(), _mail()

    await tokens.issue(account.email, VERIFY, again, mail=mail)

    assert await tokens.queued(mail.kind) == []
    assert await tokens.invalid(again, VERIFY)


async def test_a_verification_is_void_once_the_address_changed(tokens: Tokens) -> None:
    verification, reset = _hash(), _hash()
    account = await tokens.register(verification=verification)
    await tokens.issue(account.email, RESET, reset)
    # No RPC changes an address yet; the rule must hold when one does.
    await tokens.execute(
        "UPDATE accounts SET email = :email WHERE id = :id",
        email=f"new.{account.email}",
        id=uuid.UUID(account.id),
    )

    assert await tokens.invalid(verification, VERIFY)
    # A reset still works, but proves nothing about the new address.
    reset_account = await tokens.use(reset, RESET, "$2b$04$new")
    assert not reset_account.email_verified


async def test_a_reset_sets_the_password_verifies_ends_every_session_and_queues_the_mail(
    tokens: Tokens,
) -> None:
    account = await tokens.register()
    refresh_tokens = [await _login(tokens, account.id) for _ in range(3)]
    reset, other_reset, verification = _hash(), _hash(), _hash()
    await tokens.issue(account.email, RESET, reset)
    await tokens.issue(account.email, RESET, other_reset)
    await tokens.issue(account.email, VERIFY, verification)
    mail = _mail()

    changed = await tokens.use(reset, RESET, "$2b$04$reset", mail)

    assert changed.email_verified
    assert (await tokens.credentials(account.email)).password_hash == "$2b$04$reset"
    listed = await tokens.store.ListSessions(
        pb.ListSessionsRequest(account_id=account.id), metadata=tokens.metadata
    )
    assert list(listed.sessions) == []
    for refresh_token in refresh_tokens:
        refused = await failure_of(
            tokens.store.RotateRefreshToken(
                pb.RotateRefreshTokenRequest(
                    token_hash=refresh_token, new_token_hash=_hash(), new_expire_time=_in(DAY)
                ),
                metadata=tokens.metadata,
            )
        )
        assert refused.reason == "REFRESH_TOKEN_INVALID"
    assert await tokens.queued(mail.kind) == [mail.sealed]
    # Every reset token went with it; a token of the other purpose did not.
    assert await tokens.invalid(other_reset, RESET)
    assert await tokens.lookup(verification, VERIFY) == changed
    async with tokens.database.transaction() as session:
        changed_at = await session.scalar(
            text("SELECT password_changed_at FROM accounts WHERE id = :id"),
            {"id": uuid.UUID(account.id)},
        )
    assert changed_at is not None


async def test_a_reset_without_a_new_password_hash_is_refused_and_spends_nothing(
    tokens: Tokens,
) -> None:
    account = await tokens.register()
    reset = _hash()
    await tokens.issue(account.email, RESET, reset)

    failure = await failure_of(tokens.use(reset, RESET, ""))

    assert (failure.code, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["new_password_hash"],
    )
    assert await tokens.lookup(reset, RESET) == account


async def test_expired_unknown_and_other_purpose_tokens_are_invalid(tokens: Tokens) -> None:
    account = await tokens.register()
    expired, verification = _hash(), _hash()
    await tokens.issue(account.email, RESET, expired, ttl=-timedelta(seconds=1))
    await tokens.issue(account.email, VERIFY, verification)

    assert await tokens.invalid(expired, RESET)
    assert await tokens.invalid(_hash(), RESET)
    assert await tokens.invalid(verification, RESET)
    # Refused for the wrong purpose, it is still good for its own.
    assert await tokens.lookup(verification, VERIFY) == account


def _issue(**fields: object) -> pb.IssueAccountTokenRequest:
    """A valid issue request, but for the fields given (None clears one)."""
    request = pb.IssueAccountTokenRequest(
        email="someone@example.com", purpose=RESET, token=_token(_hash()), mail=_mail()
    )
    for name, value in fields.items():
        if value is None:
            request.ClearField(name)  # type: ignore[arg-type]
        elif isinstance(value, pb.SealedMail | pb.NewAccountToken):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


def _negative_cooldown() -> pb.IssueAccountTokenRequest:
    request = _issue()
    request.cooldown.FromTimedelta(-timedelta(seconds=1))
    return request


@pytest.mark.parametrize(
    ("request_", "bad_field"),
    [
        (_issue(purpose=pb.ACCOUNT_TOKEN_PURPOSE_UNSPECIFIED), "purpose"),
        (_issue(purpose=7), "purpose"),
        (_issue(email=""), "email"),
        (_issue(token=None), "token"),
        (_issue(mail=None), "mail"),
        (_issue(token=pb.NewAccountToken(token_hash=_hash())), "token.expire_time"),
        (_issue(token=_token("abc")), "token.token_hash"),
        (_issue(mail=pb.SealedMail(kind="", sealed=b"x")), "mail.kind"),
        (_issue(mail=pb.SealedMail(kind="k" * 65, sealed=b"x")), "mail.kind"),
        (_issue(mail=pb.SealedMail(kind="k", sealed=b"")), "mail.sealed"),
        (_issue(mail=pb.SealedMail(kind="k", sealed=b"x" * (256 * 1024 + 1))), "mail.sealed"),
        (_negative_cooldown(), "cooldown"),
    ],
    ids=[
        "unspecified-purpose",
        "unknown-purpose",
        "no-email",
        "no-token",
        "no-mail",
        "no-expiry",
        "bad-hash",
        "no-kind",
        "long-kind",
        "empty-mail",
        "huge-mail",
        "negative-cooldown",
    ],
)
async def test_unusable_issue_requests_are_invalid_argument(
    tokens: Tokens, request_: pb.IssueAccountTokenRequest, bad_field: str
) -> None:
    failure = await failure_of(tokens.store.IssueAccountToken(request_, metadata=tokens.metadata))

    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [bad_field])


async def test_a_largest_mail_is_accepted(tokens: Tokens) -> None:
    account = await tokens.register()
    mail = pb.SealedMail(kind=f"k_{uuid.uuid4().hex}", sealed=b"x" * (256 * 1024))

    await tokens.issue(account.email, RESET, _hash(), mail=mail)

    assert await tokens.queued(mail.kind) == [mail.sealed]


@pytest.mark.parametrize(
    ("request_", "bad_field"),
    [
        (pb.LookupAccountTokenRequest(token_hash="abc", purpose=VERIFY), "token_hash"),
        (pb.LookupAccountTokenRequest(token_hash=_hash()), "purpose"),
    ],
    ids=["bad-hash", "no-purpose"],
)
async def test_unusable_lookups_are_invalid_argument(
    tokens: Tokens, request_: pb.LookupAccountTokenRequest, bad_field: str
) -> None:
    failure = await failure_of(tokens.store.LookupAccountToken(request_, metadata=tokens.metadata))

    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [bad_field])


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"verification": pb.NewAccountToken(token_hash=_hash())}, "verification.expire_time"),
        ({"verification": _token("not-a-hash")}, "verification.token_hash"),
        ({"mail": pb.SealedMail(kind="k", sealed=b"")}, "mail.sealed"),
    ],
    ids=["no-expiry", "bad-hash", "empty-mail"],
)
async def test_unusable_verification_or_mail_of_a_new_account_is_invalid_argument(
    tokens: Tokens, fields: dict[str, pb.NewAccountToken | pb.SealedMail], bad_field: str
) -> None:
    unique = uuid.uuid4().hex[:16]
    request = pb.CreateAccountRequest(
        email=f"{unique}@example.com", username=f"u_{unique}", password_hash="h"
    )
    for name, value in fields.items():
        getattr(request, name).CopyFrom(value)

    failure = await failure_of(tokens.store.CreateAccount(request, metadata=tokens.metadata))

    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [bad_field])
    assert (await failure_of(tokens.credentials(f"{unique}@example.com"))).code == (
        grpc.StatusCode.NOT_FOUND
    )


async def test_a_verification_token_hash_already_stored_is_invalid_argument(
    tokens: Tokens,
) -> None:
    token = _hash()
    await tokens.register(verification=token)

    failure = await failure_of(tokens.register(verification=token))

    assert (failure.code, failure.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["verification.token_hash"],
    )


# -- email changes ------------------------------------------------------------------------------

CHANGE = pb.ACCOUNT_TOKEN_PURPOSE_CHANGE_EMAIL


async def _request_change(
    tokens: Tokens,
    account_id: str,
    new_email: str,
    token_hash: str,
    *,
    mail: pb.SealedMail | None = None,
    notice: pb.SealedMail | None = None,
    cooldown: timedelta | None = None,
) -> None:
    """Ask to move an account to new_email."""
    request = pb.RequestEmailChangeRequest(
        account_id=account_id,
        new_email=new_email,
        token=_token(token_hash),
        mail=mail or _mail(),
        notice=notice,
    )
    if cooldown is not None:
        request.cooldown.FromTimedelta(cooldown)
    await tokens.store.RequestEmailChange(request, metadata=tokens.metadata)


async def test_an_email_change_queues_both_mails_and_moves_the_account_when_used(
    tokens: Tokens,
) -> None:
    account = await tokens.register()
    link, notice, changed = _mail(), _mail(), _mail()
    new_email = f"moved.{uuid.uuid4().hex[:12]}@example.com"
    token = _hash()
    await _request_change(tokens, account.id, new_email.upper(), token, mail=link, notice=notice)
    assert await tokens.queued(link.kind) == [link.sealed]
    assert await tokens.queued(notice.kind) == [notice.sealed]
    # Looking it up does not change anything; it names the account as it is.
    assert (await tokens.lookup(token, CHANGE)).email == account.email

    moved = await tokens.use(token, CHANGE, mail=changed)
    assert (moved.id, moved.email, moved.email_verified) == (account.id, new_email, True)
    assert await tokens.queued(changed.kind) == [changed.sealed]
    assert (await tokens.credentials(new_email)).account.id == account.id
    assert await tokens.invalid(token, CHANGE)


async def test_an_email_change_to_an_address_taken_meanwhile_is_refused_and_spends_nothing(
    tokens: Tokens,
) -> None:
    account, other = await tokens.register(), await tokens.register()
    token, changed = _hash(), _mail()
    await _request_change(tokens, account.id, other.email, token)
    refused = await failure_of(tokens.use(token, CHANGE, mail=changed))
    assert (refused.code, refused.reason) == (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    assert await tokens.queued(changed.kind) == []
    assert (await tokens.credentials(account.email)).account.id == account.id
    assert (await tokens.lookup(token, CHANGE)).id == account.id  # still usable


async def test_a_newer_change_voids_the_older_and_the_cooldown_stores_nothing(
    tokens: Tokens,
) -> None:
    account = await tokens.register()
    first, second, third = _hash(), _hash(), _hash()
    await _request_change(tokens, account.id, f"a.{uuid.uuid4().hex[:8]}@example.com", first)
    await _request_change(tokens, account.id, f"b.{uuid.uuid4().hex[:8]}@example.com", second)
    assert await tokens.invalid(first, CHANGE)
    quiet = _mail()
    await _request_change(
        tokens,
        account.id,
        f"c.{uuid.uuid4().hex[:8]}@example.com",
        third,
        mail=quiet,
        cooldown=timedelta(minutes=5),
    )
    assert await tokens.queued(quiet.kind) == []
    assert await tokens.invalid(third, CHANGE)
    assert (await tokens.lookup(second, CHANGE)).id == account.id


async def test_a_reset_voids_the_pending_email_change(tokens: Tokens) -> None:
    account = await tokens.register()
    change, reset = _hash(), _hash()
    await _request_change(tokens, account.id, f"r.{uuid.uuid4().hex[:8]}@example.com", change)
    await tokens.issue(account.email, RESET, reset)
    await tokens.use(reset, RESET, "$2b$04$newhash")
    assert await tokens.invalid(change, CHANGE)


@pytest.mark.parametrize(
    ("field", "request_"),
    [
        ("account_id", {"account_id": "not-a-uuid"}),
        ("new_email", {"new_email": ""}),
        ("token", {"token": None}),
        ("mail", {"mail": None}),
    ],
)
async def test_unusable_email_change_requests_are_refused(
    tokens: Tokens, field: str, request_: dict[str, object]
) -> None:
    account = await tokens.register()
    values: dict[str, object] = {
        "account_id": account.id,
        "new_email": f"x.{uuid.uuid4().hex[:8]}@example.com",
        "token": _token(_hash()),
        "mail": _mail(),
        **request_,
    }
    request = pb.RequestEmailChangeRequest(**{k: v for k, v in values.items() if v is not None})
    failure = await failure_of(tokens.store.RequestEmailChange(request, metadata=tokens.metadata))
    if field == "account_id":
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")
    else:
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in failure.fields[0]


async def test_an_email_change_of_an_unknown_account_is_not_found(tokens: Tokens) -> None:
    failure = await failure_of(
        _request_change(tokens, str(uuid.uuid4()), "nobody@example.com", _hash())
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")
