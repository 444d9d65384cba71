"""The admin use cases of user_svc: block ends and reasons, usernames, audit-log page tokens and
page sizes, against an in-memory moderation store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from meshkit.errors import InvalidArgument, NotFound, PermissionDenied
from meshkit.reasons import Reason
from user_svc.moderation import AccountStatus, AuditEntry, ModerationService

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
ADMIN = "a0000000-0000-4000-8000-000000000001"
ADMIN_NAME = "the_admin"
HUNDRED_YEARS = timedelta(days=365 * 100)


@dataclass(frozen=True)
class AuditCall:
    """What the service asked the store for one page of the audit log."""

    username: str
    size: int
    before_id: int


class FakeModeration:
    """In-memory ModerationStore: accounts by username, one admin, an audit log."""

    def __init__(self, *usernames: str) -> None:
        self.accounts = {name: _account(name) for name in usernames}
        self.log: list[AuditEntry] = []
        self.audit_calls: list[AuditCall] = []
        self.touched: list[str] = []

    def _act(self, actor_id: str, username: str) -> AccountStatus:
        """Check the actor and find the account, as data_access does."""
        self.touched.append(username)
        if actor_id != ADMIN:
            raise PermissionDenied(message="admins only", reason=Reason.ADMIN_REQUIRED)
        try:
            return self.accounts[username]
        except KeyError:
            raise NotFound(message="no account", reason=Reason.ACCOUNT_NOT_FOUND) from None

    def _append(self, action: str, username: str, reason: str = "") -> None:
        """Add an entry to the audit log."""
        until = self.accounts[username].blocked_till if action == "account_blocked" else None
        self.log.append(
            AuditEntry(
                id=len(self.log) + 1,
                create_time=NOW + timedelta(seconds=len(self.log)),
                actor_username=ADMIN_NAME,
                action=action,
                account_username=username,
                reason=reason,
                blocked_till=until,
            )
        )

    async def status(self, actor_id: str, username: str) -> AccountStatus:
        """The account's status (audited)."""
        found = self._act(actor_id, username)
        self._append("account_viewed", username)
        return found

    async def block(
        self, actor_id: str, username: str, *, until: datetime, reason: str
    ) -> AccountStatus:
        """Block the account."""
        found = self._act(actor_id, username)
        self.accounts[username] = replace(found, blocked_till=until, blocked_reason=reason)
        self._append("account_blocked", username, reason)
        return self.accounts[username]

    async def unblock(self, actor_id: str, username: str, *, reason: str) -> AccountStatus:
        """Lift the account's block."""
        found = self._act(actor_id, username)
        self.accounts[username] = replace(found, blocked_till=None, blocked_reason="")
        self._append("account_unblocked", username, reason)
        return self.accounts[username]

    async def audit_log(
        self, actor_id: str, *, username: str, size: int, before_id: int
    ) -> tuple[list[AuditEntry], bool]:
        """A page of the log, newest first, and whether more remain."""
        self.audit_calls.append(AuditCall(username, size, before_id))
        if username:
            self._act(actor_id, username)
        elif actor_id != ADMIN:
            raise PermissionDenied(message="admins only", reason=Reason.ADMIN_REQUIRED)
        matching = [
            entry
            for entry in reversed(self.log)
            if (not username or entry.account_username == username)
            and (not before_id or entry.id < before_id)
        ]
        return matching[:size], len(matching) > size


def _account(username: str) -> AccountStatus:
    """A plain, unblocked account."""
    return AccountStatus(
        account_id=f"id-{username}",
        username=username,
        email=f"{username}@mail.example",
        role="user",
        create_time=NOW - timedelta(days=30),
        email_verified=True,
        blocked_till=None,
        blocked_reason="",
    )


def fields_of(error: InvalidArgument) -> list[str]:
    """The fields an InvalidArgument names, in order."""
    return [violation.field for violation in error.violations]


@pytest.fixture
def store() -> FakeModeration:
    return FakeModeration("alice", "bob_99")


@pytest.fixture
def service(store: FakeModeration) -> ModerationService:
    return ModerationService(store)


# --- When a block ends ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "until",
    [
        None,
        NOW,
        NOW - timedelta(seconds=1),
        NOW - timedelta(days=400),
        NOW + HUNDRED_YEARS + timedelta(seconds=1),
        NOW + timedelta(days=365 * 101),
    ],
)
async def test_a_block_must_end_in_the_future_and_within_100_years(
    service: ModerationService, store: FakeModeration, until: datetime | None
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await service.block(ADMIN, "alice", until=until, reason="spam", now=NOW)

    assert fields_of(refused.value) == ["until"]
    assert store.touched == []
    assert store.accounts["alice"].blocked_till is None


@pytest.mark.parametrize(
    "until", [NOW + timedelta(seconds=1), NOW + timedelta(days=7), NOW + HUNDRED_YEARS]
)
async def test_blocks_up_to_100_years_ahead_reach_the_store_unchanged(
    service: ModerationService, store: FakeModeration, until: datetime
) -> None:
    status = await service.block(ADMIN, "alice", until=until, reason="spam", now=NOW)

    assert (status.blocked_till, status.blocked_reason) == (until, "spam")
    assert store.accounts["alice"].blocked_till == until


async def test_without_now_the_current_time_decides(service: ModerationService) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    with pytest.raises(InvalidArgument) as refused:
        await service.block(ADMIN, "alice", until=past, reason="spam")
    assert fields_of(refused.value) == ["until"]

    soon = datetime.now(UTC) + timedelta(minutes=5)
    assert (await service.block(ADMIN, "alice", until=soon, reason="spam")).blocked_till == soon


async def test_a_bad_end_and_a_bad_reason_are_reported_together(
    service: ModerationService, store: FakeModeration
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await service.block(ADMIN, "alice", until=None, reason=" ", now=NOW)

    assert fields_of(refused.value) == ["until", "reason"]
    assert store.touched == []


# --- Reasons --------------------------------------------------------------------------------

LATER = NOW + timedelta(days=1)


@pytest.mark.parametrize(
    "reason",
    ["", "   \n ", "x" * 501, "ring \x07 the bell", "tab\tseparated", "nul\x00", "esc \x1b[31m"],
)
async def test_a_block_needs_a_printable_reason_of_at_most_500_characters(
    service: ModerationService, store: FakeModeration, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await service.block(ADMIN, "alice", until=LATER, reason=reason, now=NOW)

    assert fields_of(refused.value) == ["reason"]
    assert store.touched == []


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("  spam  ", "spam"),
        ("  " + "r" * 500 + "\n", "r" * 500),
        ("first line\nsecond line", "first line\nsecond line"),
        ("Spam — lots of it ✓", "Spam — lots of it ✓"),
    ],
)
async def test_block_reasons_are_trimmed_and_kept(
    service: ModerationService, store: FakeModeration, given: str, kept: str
) -> None:
    status = await service.block(ADMIN, "alice", until=LATER, reason=given, now=NOW)

    assert status.blocked_reason == kept
    assert store.log[-1].reason == kept


@pytest.mark.parametrize(("given", "kept"), [("", ""), ("   ", ""), (" appeal won ", "appeal won")])
async def test_an_unblock_reason_is_optional_and_trimmed(
    service: ModerationService, store: FakeModeration, given: str, kept: str
) -> None:
    await service.block(ADMIN, "alice", until=LATER, reason="spam", now=NOW)

    status = await service.unblock(ADMIN, "alice", reason=given)

    assert status.blocked_till is None
    assert (store.log[-1].action, store.log[-1].reason) == ("account_unblocked", kept)


@pytest.mark.parametrize("reason", ["y" * 501, "bell\x07"])
async def test_an_unblock_reason_follows_the_same_limits(
    service: ModerationService, store: FakeModeration, reason: str
) -> None:
    await service.block(ADMIN, "alice", until=LATER, reason="spam", now=NOW)

    with pytest.raises(InvalidArgument) as refused:
        await service.unblock(ADMIN, "alice", reason=reason)

    assert fields_of(refused.value) == ["reason"]
    assert store.accounts["alice"].blocked_till == LATER


# --- Usernames ------------------------------------------------------------------------------


async def test_usernames_reach_the_store_normalised(
    service: ModerationService, store: FakeModeration
) -> None:
    await service.status(ADMIN, "  ALICE ")
    await service.block(ADMIN, "Bob_99", until=LATER, reason="spam", now=NOW)
    await service.unblock(ADMIN, "BOB_99\t", reason="")
    await service.audit_log(ADMIN, username=" Alice", size=10, token="")

    assert store.touched == ["alice", "bob_99", "bob_99", "alice"]
    assert store.audit_calls[-1].username == "alice"


@pytest.mark.parametrize(
    "username", ["", "   ", "no spaces", "ab", "a" * 31, "bad..dots", "\uff45ve"]
)
async def test_malformed_usernames_are_refused_before_the_store(
    service: ModerationService, store: FakeModeration, username: str
) -> None:
    calls: list[Callable[[], Awaitable[AccountStatus]]] = [
        lambda: service.status(ADMIN, username),
        lambda: service.block(ADMIN, username, until=LATER, reason="spam", now=NOW),
        lambda: service.unblock(ADMIN, username, reason=""),
    ]
    for call in calls:
        with pytest.raises(InvalidArgument) as refused:
            await call()
        assert fields_of(refused.value) == ["username"]
    assert store.touched == []


async def test_reserved_names_are_still_found() -> None:
    store = FakeModeration("admin")
    status = await ModerationService(store).status(ADMIN, "Admin")

    assert status.username == "admin"


async def test_an_empty_username_filter_lists_every_account(
    service: ModerationService, store: FakeModeration
) -> None:
    await service.status(ADMIN, "alice")
    await service.status(ADMIN, "bob_99")

    page = await service.audit_log(ADMIN, username="", size=10, token="")

    assert [e.account_username for e in page.entries] == ["bob_99", "alice"]
    assert store.audit_calls[-1] == AuditCall("", 10, 0)


# --- Audit pages ----------------------------------------------------------------------------


async def _views(service: ModerationService, username: str, count: int) -> None:
    """Have the admin read an account count times, each read one audit entry."""
    for _ in range(count):
        await service.status(ADMIN, username)


async def test_audit_pages_continue_where_the_last_stopped(
    service: ModerationService, store: FakeModeration
) -> None:
    await _views(service, "alice", 3)
    await _views(service, "bob_99", 2)
    await _views(service, "alice", 2)

    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = await service.audit_log(ADMIN, username="alice", size=2, token=token)
        pages += 1
        seen.extend(entry.id for entry in page.entries)
        token = page.next_page_token
        if not token:
            break

    assert pages == 3
    assert seen == [7, 6, 3, 2, 1]
    assert [call.before_id for call in store.audit_calls] == [0, 6, 2]


async def test_the_last_page_has_no_token(service: ModerationService) -> None:
    await _views(service, "alice", 2)

    page = await service.audit_log(ADMIN, username="alice", size=2, token="")

    assert len(page.entries) == 2
    assert page.next_page_token == ""


async def test_a_page_token_holds_only_for_the_filter_it_was_made_for(
    service: ModerationService, store: FakeModeration
) -> None:
    await _views(service, "alice", 3)
    await _views(service, "bob_99", 3)
    of_alice = (await service.audit_log(ADMIN, username="alice", size=1, token="")).next_page_token
    of_everyone = (await service.audit_log(ADMIN, username="", size=1, token="")).next_page_token
    asked = len(store.audit_calls)

    for username, token in [("bob_99", of_alice), ("", of_alice), ("alice", of_everyone)]:
        with pytest.raises(InvalidArgument) as refused:
            await service.audit_log(ADMIN, username=username, size=1, token=token)
        assert fields_of(refused.value) == ["page_token"]
    assert len(store.audit_calls) == asked

    # The same filter spelled differently is the same listing.
    page = await service.audit_log(ADMIN, username=" ALICE", size=1, token=of_alice)
    assert [e.account_username for e in page.entries] == ["alice"]


@pytest.mark.parametrize("token", ["garbage", "e30", "W10", "x" * 2000])
async def test_tokens_not_made_by_the_audit_log_are_refused(
    service: ModerationService, store: FakeModeration, token: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await service.audit_log(ADMIN, username="alice", size=10, token=token)

    assert fields_of(refused.value) == ["page_token"]
    assert store.audit_calls == []


@pytest.mark.parametrize(
    ("requested", "used"),
    [(0, 50), (1, 1), (49, 49), (100, 100), (101, 100)],
)
async def test_page_sizes_default_to_50_and_are_capped_at_100(
    service: ModerationService, store: FakeModeration, requested: int, used: int
) -> None:
    await _views(service, "alice", 120)

    page = await service.audit_log(ADMIN, username="alice", size=requested, token="")

    assert len(page.entries) == used
    assert store.audit_calls[-1].size == used
    assert page.next_page_token


async def test_huge_page_sizes_are_capped_too(
    service: ModerationService, store: FakeModeration
) -> None:
    await service.audit_log(ADMIN, username="", size=2**31 - 1, token="")

    assert store.audit_calls[-1].size == 100


async def test_negative_page_sizes_are_invalid(
    service: ModerationService, store: FakeModeration
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await service.audit_log(ADMIN, username="alice", size=-1, token="")

    assert fields_of(refused.value) == ["page_size"]
    assert store.audit_calls == []


async def test_the_store_decides_who_is_an_admin(
    service: ModerationService, store: FakeModeration
) -> None:
    with pytest.raises(PermissionDenied) as refused:
        await service.block("someone-else", "alice", until=LATER, reason="spam", now=NOW)

    assert refused.value.reason == Reason.ADMIN_REQUIRED
    assert store.accounts["alice"].blocked_till is None
