"""ModerationService (admin roles, blocks with `blocked_till`, the audit log) through real stubs
called as user_svc calls them, logins as auth_svc makes them, and the operator's set_role and
the block sweeper against the same database."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from data_access.database import Database, open_database
from data_access.moderation import set_role
from data_access.sweeper import BLOCKS, Sweeper
from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from meshkit.errors import NotFound
from meshkit.timestamps import to_datetime, to_timestamp
from tests.helpers import AccountFactory, Metadata, error_info, failure_of

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
DENIED = (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")
INVALID_TOKEN = (grpc.StatusCode.NOT_FOUND, "REFRESH_TOKEN_INVALID")
BLOCKED = (grpc.StatusCode.PERMISSION_DENIED, "ACCOUNT_BLOCKED")


def _token_hash() -> str:
    """A fresh refresh-token hash."""
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def _later(delta: timedelta) -> datetime:
    """The moment delta from now, in UTC."""
    return datetime.now(UTC) + delta


@dataclass(frozen=True)
class Moderation:
    """ModerationService as user_svc calls it, AccountStoreService as auth_svc calls it, and
    the database underneath both."""

    stub: pb_grpc.ModerationServiceAsyncStub
    accounts: pb_grpc.AccountStoreServiceAsyncStub
    as_user: Metadata
    as_auth: Metadata
    database: Database

    async def status(self, actor: str, username: str) -> pb.AccountStatus:
        """GetAccountStatus of username by actor."""
        response = await self.stub.GetAccountStatus(
            pb.GetAccountStatusRequest(actor_id=actor, username=username), metadata=self.as_user
        )
        return response.status

    async def block(
        self,
        actor: str,
        username: str,
        *,
        until: datetime | None = None,
        reason: str = "spam links",
    ) -> pb.AccountStatus:
        """BlockAccount of username by actor (an hour unless until is given)."""
        request = pb.BlockAccountRequest(
            actor_id=actor,
            username=username,
            until=to_timestamp(until or _later(HOUR)),
            reason=reason,
        )
        response = await self.stub.BlockAccount(request, metadata=self.as_user)
        return response.status

    async def unblock(self, actor: str, username: str, *, reason: str = "") -> pb.AccountStatus:
        """UnblockAccount of username by actor."""
        response = await self.stub.UnblockAccount(
            pb.UnblockAccountRequest(actor_id=actor, username=username, reason=reason),
            metadata=self.as_user,
        )
        return response.status

    async def audit(
        self, actor: str, *, username: str = "", page_size: int = 100, before_id: int = 0
    ) -> pb.ListAuditEventsResponse:
        """One page of ListAuditEvents read by actor."""
        return await self.stub.ListAuditEvents(
            pb.ListAuditEventsRequest(
                actor_id=actor, username=username, page_size=page_size, before_id=before_id
            ),
            metadata=self.as_user,
        )

    async def entry(self, actor: str, entry_id: int) -> pb.AuditEvent:
        """The audit entry with this id, as ListAuditEvents shows it."""
        page = await self.audit(actor, page_size=1, before_id=entry_id + 1)
        (found,) = page.events
        assert found.id == entry_id
        return found

    async def login(self, account_id: str) -> str:
        """CreateRefreshToken for a new session of account_id; the token's hash."""
        token = _token_hash()
        await self.accounts.CreateRefreshToken(
            pb.CreateRefreshTokenRequest(
                account_id=account_id,
                token_hash=token,
                expire_time=to_timestamp(_later(DAY)),
                session_end_time=to_timestamp(_later(30 * DAY)),
            ),
            metadata=self.as_auth,
        )
        return token

    async def rotate(self, token: str) -> str:
        """RotateRefreshToken of token to a fresh successor; the successor's hash."""
        successor = _token_hash()
        await self.accounts.RotateRefreshToken(
            pb.RotateRefreshTokenRequest(
                token_hash=token,
                new_token_hash=successor,
                new_expire_time=to_timestamp(_later(DAY)),
            ),
            metadata=self.as_auth,
        )
        return successor

    async def live_sessions(self, account_id: str) -> int:
        """How many live sessions ListSessions reports for account_id."""
        response = await self.accounts.ListSessions(
            pb.ListSessionsRequest(account_id=account_id), metadata=self.as_auth
        )
        return len(response.sessions)

    async def execute(self, statement: str, **params: object) -> None:
        """Run one statement as no RPC does (an operator or a clock moving on)."""
        async with self.database.transaction() as session:
            await session.execute(text(statement), params)

    async def rows(self, query: str, **params: object) -> list[Any]:
        """The rows of one query."""
        async with self.database.transaction() as session:
            return list((await session.execute(text(query), params)).all())

    async def stored_block(self, account_id: str) -> tuple[datetime | None, str]:
        """(blocked_till, blocked_reason) as stored for account_id, expired or not."""
        (row,) = await self.rows(
            "SELECT blocked_till, blocked_reason FROM accounts WHERE id = :id",
            id=uuid.UUID(account_id),
        )
        return row.blocked_till, row.blocked_reason

    async def audited(self, account_id: str) -> list[Any]:
        """Every audit entry naming account_id as actor or target, oldest first."""
        return await self.rows(
            "SELECT id, actor_id, action, account_id, reason, blocked_till FROM audit_events "
            "WHERE actor_id = :id OR account_id = :id ORDER BY id",
            id=uuid.UUID(account_id),
        )


@pytest.fixture(scope="module")
async def database(database_url: str) -> AsyncIterator[Database]:
    """A pool on the session's database, named apart from data_access's own connections."""
    opened = open_database(database_url, pool_size=2, max_overflow=2, application_name="tests")
    yield opened
    await opened.dispose()


@pytest.fixture(scope="module")
def moderation(
    data_access_channel: grpc.aio.Channel,
    account_store: pb_grpc.AccountStoreServiceAsyncStub,
    as_user: Metadata,
    as_auth: Metadata,
    database: Database,
) -> Moderation:
    """Moderation of the session's data_access."""
    stub = pb_grpc.ModerationServiceStub(data_access_channel)
    return Moderation(stub, account_store, as_user, as_auth, database)


@pytest.fixture
def new_admin(new_account: AccountFactory, database: Database) -> AccountFactory:
    """Factory of fresh accounts made admins by the operator's command."""

    async def create() -> pb.AccountRecord:
        account = await new_account()
        await set_role(database, account.email, "admin")
        return account

    return create


def _is_uuid(value: str) -> bool:
    """Whether value is a UUID (an id some account could have)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def _refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    """(code, reason) of a call expected to fail."""
    failure = await failure_of(call)
    return failure.code, failure.reason


# --- Who may act ----------------------------------------------------------------------------

ActorMaker = Callable[[Moderation, AccountFactory, AccountFactory], Awaitable[str]]
"""Makes the actor id of a refused caller."""


async def _plain_user(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> str:
    """An account that never was an admin."""
    return (await new_account()).id


async def _malformed(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> str:
    """An actor id that is no UUID."""
    return "not-a-uuid"


async def _missing(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> str:
    """No actor id at all."""
    return ""


async def _unknown(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> str:
    """A well-formed id of no account."""
    return str(uuid.uuid4())


async def _blocked_admin(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> str:
    """An admin whose own account is blocked for the next hour."""
    admin = await new_admin()
    await moderation.execute(
        "UPDATE accounts SET blocked_till = now() + interval '1 hour', blocked_reason = 'x' "
        "WHERE id = :id",
        id=uuid.UUID(admin.id),
    )
    return admin.id


@pytest.mark.parametrize(
    "make_actor",
    [_plain_user, _malformed, _missing, _unknown, _blocked_admin],
    ids=["plain_user", "malformed", "missing", "unknown", "blocked_admin"],
)
async def test_only_admins_in_good_standing_may_call_and_refusals_change_nothing(
    moderation: Moderation,
    new_account: AccountFactory,
    new_admin: AccountFactory,
    make_actor: ActorMaker,
) -> None:
    target = await new_account()
    session = await moderation.login(target.id)
    actor = await make_actor(moderation, new_account, new_admin)
    audited_before = await moderation.audited(actor) if _is_uuid(actor) else []

    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: moderation.status(actor, target.username),
        lambda: moderation.block(actor, target.username),
        lambda: moderation.unblock(actor, target.username, reason="appeal"),
        lambda: moderation.audit(actor),
        lambda: moderation.audit(actor, username=target.username),
    ]
    for call in calls:
        assert await _refused(call()) == DENIED

    assert await moderation.stored_block(target.id) == (None, "")
    assert await moderation.audited(target.id) == []
    if _is_uuid(actor):
        assert await moderation.audited(actor) == audited_before
    # The target's session was not ended by a refused block.
    await moderation.rotate(session)


async def test_an_admin_whose_block_is_over_may_act_again(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    await moderation.execute(
        "UPDATE accounts SET blocked_till = now() + interval '1 hour' WHERE id = :id",
        id=uuid.UUID(admin.id),
    )
    assert await _refused(moderation.status(admin.id, target.username)) == DENIED

    await moderation.execute(
        "UPDATE accounts SET blocked_till = now() - interval '1 second' WHERE id = :id",
        id=uuid.UUID(admin.id),
    )
    assert (await moderation.status(admin.id, target.username)).username == target.username


async def test_moderation_is_refused_to_other_services(
    moderation: Moderation, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    call = moderation.stub.GetAccountStatus(
        pb.GetAccountStatusRequest(actor_id=admin.id, username=admin.username),
        metadata=moderation.as_auth,
    )
    assert await _refused(call) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


# --- The operator's set_role ----------------------------------------------------------------


async def test_set_role_grants_and_revokes_at_once_and_audits_without_an_actor(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    account = await new_account()
    target = await new_account()
    witness = await new_admin()
    assert await _refused(moderation.status(account.id, target.username)) == DENIED

    username = await set_role(moderation.database, f"  {account.email.upper()} ", "admin")

    assert username == account.username
    assert (await moderation.status(account.id, target.username)).role == "user"
    assert (await moderation.status(witness.id, account.username)).role == "admin"

    await set_role(moderation.database, account.email, "user")

    assert await _refused(moderation.status(account.id, target.username)) == DENIED
    assert (await moderation.status(witness.id, account.username)).role == "user"
    page = await moderation.audit(witness.id, username=account.username)
    role_changes = [
        (event.action, event.actor_username, event.account_username, event.reason)
        for event in page.events
        if event.action.startswith("role_")
    ]
    assert role_changes == [
        ("role_revoked", "", account.username, "role user by the operator"),
        ("role_granted", "", account.username, "role admin by the operator"),
    ]
    stored = [row for row in await moderation.audited(account.id) if row.action.startswith("role")]
    assert [row.actor_id for row in stored] == [None, None]


async def test_set_role_of_an_unknown_email_is_not_found(moderation: Moderation) -> None:
    with pytest.raises(NotFound):
        await set_role(moderation.database, f"{uuid.uuid4().hex}@example.com", "admin")


@pytest.mark.parametrize("role", ["moderator", "Admin", ""])
async def test_set_role_refuses_unknown_roles_and_changes_nothing(
    moderation: Moderation, new_account: AccountFactory, role: str
) -> None:
    account = await new_account()

    with pytest.raises(ValueError, match="role"):
        await set_role(moderation.database, account.email, role)

    (row,) = await moderation.rows(
        "SELECT role FROM accounts WHERE id = :id", id=uuid.UUID(account.id)
    )
    assert row.role == "user"
    assert await moderation.audited(account.id) == []


# --- Blocks ---------------------------------------------------------------------------------


async def test_a_block_ends_every_live_session_and_refuses_new_logins(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    bystander = await new_account()
    laptop = await moderation.login(target.id)
    phone = await moderation.rotate(await moderation.login(target.id))
    other = await moderation.login(bystander.id)
    until = _later(2 * HOUR)

    status = await moderation.block(admin.id, target.username.upper(), until=until, reason="spam")

    assert (status.username, to_datetime(status.blocked_till), status.blocked_reason) == (
        target.username,
        until,
        "spam",
    )
    for token in (laptop, phone):
        assert await _refused(moderation.rotate(token)) == INVALID_TOKEN
    assert await moderation.live_sessions(target.id) == 0
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await moderation.login(target.id)
    info = error_info(refused.value)
    assert (refused.value.code(), info.reason) == BLOCKED
    assert datetime.fromisoformat(info.metadata["blocked_till"]) == until
    # Nobody else is logged out.
    await moderation.rotate(other)
    read = await moderation.status(admin.id, target.username)
    assert (to_datetime(read.blocked_till), read.blocked_reason) == (until, "spam")


async def test_a_block_is_audited_with_its_actor_reason_and_end(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    until = _later(DAY)

    await moderation.block(admin.id, target.username, until=until, reason="harassment")

    (event,) = (await moderation.audit(admin.id, username=target.username)).events
    assert (event.action, event.actor_username, event.account_username, event.reason) == (
        "account_blocked",
        admin.username,
        target.username,
        "harassment",
    )
    assert to_datetime(event.blocked_till) == until


async def test_unblocking_lets_the_account_log_in_and_is_audited_with_or_without_a_reason(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    await moderation.block(admin.id, target.username)

    status = await moderation.unblock(admin.id, target.username)

    assert not status.HasField("blocked_till")
    assert status.blocked_reason == ""
    assert await moderation.stored_block(target.id) == (None, "")
    await moderation.rotate(await moderation.login(target.id))
    # Lifting a block that is not there is still written down.
    await moderation.unblock(admin.id, target.username, reason="double check")
    events = (await moderation.audit(admin.id, username=target.username)).events
    assert [(e.action, e.reason) for e in events] == [
        ("account_unblocked", "double check"),
        ("account_unblocked", ""),
        ("account_blocked", "spam links"),
    ]
    assert not events[0].HasField("blocked_till")


async def _assert_not_blocked(moderation: Moderation, target: pb.AccountRecord) -> None:
    """The target is not blocked, no block of it was audited and it can still log in."""
    assert await moderation.stored_block(target.id) == (None, "")
    assert [row.action for row in await moderation.audited(target.id)] == []
    await moderation.rotate(await moderation.login(target.id))


@pytest.mark.parametrize("ago", [timedelta(seconds=1), DAY, 1000 * DAY])
async def test_a_block_ending_in_the_past_is_invalid(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory, ago: timedelta
) -> None:
    admin = await new_admin()
    target = await new_account()

    failure = await failure_of(
        moderation.block(admin.id, target.username, until=datetime.now(UTC) - ago)
    )

    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert any(field.endswith("until") for field in failure.fields)
    await _assert_not_blocked(moderation, target)


async def test_a_block_ending_in_the_past_names_the_until_field(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()

    failure = await failure_of(moderation.block(admin.id, target.username, until=_later(-HOUR)))

    assert failure.fields == ["until"]


async def test_a_block_without_an_end_is_invalid(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    request = pb.BlockAccountRequest(actor_id=admin.id, username=target.username, reason="spam")

    failure = await failure_of(moderation.stub.BlockAccount(request, metadata=moderation.as_user))

    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["until"])
    await _assert_not_blocked(moderation, target)


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, "spam\x00"])
async def test_a_block_needs_a_storable_reason_of_at_most_500_characters(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory, reason: str
) -> None:
    admin = await new_admin()
    target = await new_account()

    failure = await failure_of(moderation.block(admin.id, target.username, reason=reason))

    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["reason"])
    await _assert_not_blocked(moderation, target)


async def test_a_reason_of_exactly_500_characters_is_kept_whole(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    reason = "r" * 499 + "!"

    status = await moderation.block(admin.id, target.username, reason=reason)

    assert status.blocked_reason == reason
    assert (await moderation.stored_block(target.id))[1] == reason


async def test_an_unblock_reason_over_500_characters_is_invalid(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    await moderation.block(admin.id, target.username)

    failure = await failure_of(moderation.unblock(admin.id, target.username, reason="y" * 501))

    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["reason"])
    assert (await moderation.stored_block(target.id))[0] is not None


async def test_admins_cannot_be_blocked_not_even_by_themselves(
    moderation: Moderation, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    colleague = await new_admin()
    session = await moderation.login(colleague.id)

    for target in (colleague, admin):
        refused = await _refused(moderation.block(admin.id, target.username))
        assert refused == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_IS_ADMIN")
        assert await moderation.stored_block(target.id) == (None, "")

    await moderation.rotate(session)
    actions = {row.action for row in await moderation.audited(colleague.id)}
    assert actions == {"role_granted"}


async def test_unknown_accounts_are_not_found_by_every_call(
    moderation: Moderation, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    nobody = f"nobody_{uuid.uuid4().hex[:12]}"
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: moderation.status(admin.id, nobody),
        lambda: moderation.block(admin.id, nobody),
        lambda: moderation.unblock(admin.id, nobody),
        lambda: moderation.audit(admin.id, username=nobody),
        lambda: moderation.status(admin.id, ""),
        lambda: moderation.status(admin.id, "x" * 500),
    ]
    for call in calls:
        assert await _refused(call()) == (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")
    assert [row.action for row in await moderation.audited(admin.id)] == ["role_granted"]


async def test_logins_racing_a_block_leave_no_live_session(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    logins = [moderation.login(target.id) for _ in range(20)]

    results = await asyncio.gather(
        *logins[:10],
        moderation.block(admin.id, target.username),
        *logins[10:],
        return_exceptions=True,
    )

    block = results.pop(10)
    assert isinstance(block, pb.AccountStatus)
    tokens = [result for result in results if isinstance(result, str)]
    refusals = [result for result in results if not isinstance(result, str)]
    for refusal in refusals:
        assert isinstance(refusal, grpc.aio.AioRpcError), refusal
        assert (refusal.code(), error_info(refusal).reason) == BLOCKED
    for token in tokens:
        assert await _refused(moderation.rotate(token)) == INVALID_TOKEN
    assert await moderation.live_sessions(target.id) == 0


# --- Expiry and the sweeper -----------------------------------------------------------------


async def _expire_block(moderation: Moderation, account_id: str) -> None:
    """Move an account's block end a moment into the past, as time passing would."""
    await moderation.execute(
        "UPDATE accounts SET blocked_till = now() - interval '1 second' WHERE id = :id",
        id=uuid.UUID(account_id),
    )


async def test_a_block_past_its_end_lets_logins_through_before_any_sweep(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    await moderation.block(admin.id, target.username)
    await _expire_block(moderation, target.id)

    token = await moderation.login(target.id)

    await moderation.rotate(token)
    status = await moderation.status(admin.id, target.username)
    assert not status.HasField("blocked_till")
    assert status.blocked_reason == ""


async def test_a_short_block_ends_on_its_own(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    await moderation.block(admin.id, target.username, until=_later(timedelta(seconds=1)))
    assert await _refused(moderation.login(target.id)) == BLOCKED

    await asyncio.sleep(1.2)

    await moderation.rotate(await moderation.login(target.id))


async def test_the_sweeper_lifts_expired_blocks_and_audits_each_once(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    expired = [await new_account(), await new_account()]
    still_blocked = await new_account()
    for target in (*expired, still_blocked):
        await moderation.block(admin.id, target.username, reason="cool off")
    for target in expired:
        await _expire_block(moderation, target.id)
    sweeper = Sweeper(moderation.database, BLOCKS, interval_seconds=3600)

    for _ in range(2):
        await sweeper.sweep_once()

    for target in expired:
        assert await moderation.stored_block(target.id) == (None, "")
        lifted = [
            row for row in await moderation.audited(target.id) if row.action == "block_expired"
        ]
        assert [(row.actor_id, row.reason) for row in lifted] == [(None, "the block ended")]
        newest = (await moderation.audit(admin.id, username=target.username)).events[0]
        assert (newest.action, newest.actor_username, newest.account_username) == (
            "block_expired",
            "",
            target.username,
        )
    till, reason = await moderation.stored_block(still_blocked.id)
    assert till is not None
    assert reason == "cool off"
    actions = [row.action for row in await moderation.audited(still_blocked.id)]
    assert actions == ["account_blocked"]
    assert await _refused(moderation.login(still_blocked.id)) == BLOCKED


# --- The audit log --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("action", "'account_viewed'"),
        ("reason", "'nothing happened'"),
        ("blocked_till", "NULL"),
        ("created_at", "now() - interval '1 year'"),
        ("actor_id", "account_id"),
    ],
)
async def test_audit_entries_cannot_be_rewritten(
    moderation: Moderation,
    new_account: AccountFactory,
    new_admin: AccountFactory,
    column: str,
    value: str,
) -> None:
    admin = await new_admin()
    target = await new_account()
    await moderation.block(admin.id, target.username, reason="spam")
    (before,) = await moderation.audited(target.id)

    with pytest.raises(DBAPIError, match="append-only"):
        await moderation.execute(
            f"UPDATE audit_events SET {column} = {value} WHERE id = :id",
            id=before.id,
        )

    assert await moderation.audited(target.id) == [before]


@pytest.mark.parametrize(
    "statement", ["DELETE FROM audit_events WHERE id = :id", "TRUNCATE audit_events"]
)
async def test_audit_entries_cannot_be_deleted(
    moderation: Moderation,
    new_account: AccountFactory,
    new_admin: AccountFactory,
    statement: str,
) -> None:
    admin = await new_admin()
    target = await new_account()
    await moderation.block(admin.id, target.username, reason="spam")
    (before,) = await moderation.audited(target.id)

    with pytest.raises(DBAPIError, match="append-only"):
        await moderation.execute(statement, id=before.id)

    assert await moderation.audited(target.id) == [before]


async def test_deleting_accounts_keeps_their_audit_entries_without_names(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    reader = await new_admin()
    target = await new_account()
    await moderation.block(admin.id, target.username, reason="spam")
    await moderation.unblock(admin.id, target.username, reason="appeal")
    ids = [row.id for row in await moderation.audited(target.id)]
    assert len(ids) == 2

    for gone in (target, admin):
        await moderation.execute("DELETE FROM accounts WHERE id = :id", id=uuid.UUID(gone.id))

    rows = await moderation.rows(
        "SELECT actor_id, account_id, action, reason FROM audit_events WHERE id = ANY(:ids) "
        "ORDER BY id",
        ids=ids,
    )
    assert [tuple(row) for row in rows] == [
        (None, None, "account_blocked", "spam"),
        (None, None, "account_unblocked", "appeal"),
    ]
    for entry_id in ids:
        event = await moderation.entry(reader.id, entry_id)
        assert (event.actor_username, event.account_username) == ("", "")
    assert await _refused(moderation.audit(reader.id, username=target.username)) == (
        grpc.StatusCode.NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    )


async def test_the_audit_log_pages_newest_first_by_before_id(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    other = await new_account()
    for _ in range(3):
        await moderation.status(admin.id, target.username)
        await moderation.status(admin.id, other.username)

    pages: list[pb.ListAuditEventsResponse] = []
    before = 0
    while not pages or pages[-1].more:
        pages.append(
            await moderation.audit(
                admin.id, username=target.username, page_size=2, before_id=before
            )
        )
        before = pages[-1].events[-1].id

    assert [(len(page.events), page.more) for page in pages] == [(2, True), (1, False)]
    events = [event for page in pages for event in page.events]
    ids = [event.id for event in events]
    assert ids == sorted(ids, reverse=True)
    assert {(e.action, e.actor_username, e.account_username) for e in events} == {
        ("account_viewed", admin.username, target.username)
    }
    # Unfiltered, both accounts' reads interleave, newest first; reading the log is not audited.
    (newest,) = (await moderation.audit(admin.id, username=other.username, page_size=1)).events
    everyone = await moderation.audit(admin.id, page_size=6, before_id=newest.id + 1)
    assert [e.account_username for e in everyone.events] == [other.username, target.username] * 3
    again = await moderation.audit(admin.id, page_size=6, before_id=newest.id + 1)
    assert [e.id for e in again.events] == [e.id for e in everyone.events]


async def test_the_audit_log_of_an_account_is_found_by_username_in_any_case(
    moderation: Moderation, new_account: AccountFactory, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    target = await new_account()
    await moderation.status(admin.id, target.username)

    page = await moderation.audit(admin.id, username=f" {target.username.upper()} ")

    assert [e.account_username for e in page.events] == [target.username]


@pytest.mark.parametrize(
    ("page_size", "before_id", "field"),
    [(0, 0, "page_size"), (-1, 0, "page_size"), (1001, 0, "page_size"), (10, -1, "before_id")],
)
async def test_audit_pages_out_of_bounds_are_invalid(
    moderation: Moderation, new_admin: AccountFactory, page_size: int, before_id: int, field: str
) -> None:
    admin = await new_admin()

    failure = await failure_of(moderation.audit(admin.id, page_size=page_size, before_id=before_id))

    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


async def test_an_audit_page_may_hold_up_to_1000_entries(
    moderation: Moderation, new_admin: AccountFactory
) -> None:
    admin = await new_admin()
    (total,) = await moderation.rows("SELECT count(*) AS n FROM audit_events")

    page = await moderation.audit(admin.id, page_size=1000)

    assert len(page.events) == min(total.n, 1000)
    assert page.more == (total.n > 1000)
