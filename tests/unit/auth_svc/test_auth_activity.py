"""The security log: page tokens, page sizes, paging through an account's own log, and appends
that never fail (nor pile up behind) the action they describe."""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest

from auth_svc.accounts import Account, Device
from auth_svc.activity import MAX_PENDING, SecurityLog, page_token, parse_page_token
from auth_svc.security_store import EventKind, NewEvent
from meshkit.access_tokens import Principal
from meshkit.errors import InvalidArgument, Unavailable
from meshkit.reasons import Reason
from tests.unit.auth_svc.memory_stores import FakeClock, MemoryAccountStore, MemorySecurityStore

PHONE = Device(user_agent="MeshPhone/1.0", client_ip="198.51.100.7")


@pytest.fixture
def security() -> MemorySecurityStore:
    return MemorySecurityStore(MemoryAccountStore(FakeClock()))


@pytest.fixture
def ann(security: MemorySecurityStore) -> Account:
    return security.accounts.add("ann@example.com", "ann")


def principal(account: Account) -> Principal:
    return Principal(account_id=account.id, username=account.username)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("before_id", [1, 42, 10**12, 2**63 - 1])
def test_a_page_token_gives_back_its_event_id(before_id: int) -> None:
    token = page_token(before_id)
    assert str(before_id) not in token, "opaque"
    assert parse_page_token(token) == before_id


def test_no_token_starts_at_the_newest() -> None:
    assert parse_page_token("") == 0


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "!!!",
        "é",
        _b64("e1:"),
        _b64("e1:abc"),
        _b64("e1:0"),
        _b64("e1:-5"),
        _b64("e1: 5"),
        _b64(f"e1:{2**63}"),
        _b64("x1:5"),
        _b64("5"),
        "\x00" * 8,
    ],
)
def test_a_token_this_service_did_not_make_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_page_token(token)
    assert [v.field for v in caught.value.violations] == ["page_token"]


async def test_pages_list_the_callers_log_newest_first_without_gaps_or_repeats(
    security: MemorySecurityStore, ann: Account
) -> None:
    log = SecurityLog(security)
    bob = security.accounts.add("bob@example.com", "bob")
    for n in range(45):
        await log.record(NewEvent(ann.id, EventKind.LOGIN_SUCCEEDED, PHONE, detail=f"{n}"))
        await log.record(NewEvent(bob.id, EventKind.LOGIN_FAILED, PHONE))
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        page, token = await log.page(principal(ann), 0, token)
        sizes.append(len(page.events))
        seen.extend(e.detail for e in page.events)
        if not token:
            break
    assert sizes == [20, 20, 5]
    assert seen == [f"{n}" for n in reversed(range(45))]


@pytest.mark.parametrize(
    ("asked", "listed"), [(0, 20), (1, 1), (100, 100), (101, 100), (10**6, 100)]
)
async def test_the_page_size_defaults_to_20_and_stops_at_100(
    security: MemorySecurityStore, ann: Account, asked: int, listed: int
) -> None:
    log = SecurityLog(security)
    for _ in range(120):
        await log.record(NewEvent(ann.id, EventKind.LOGIN_SUCCEEDED, PHONE))
    page, following = await log.page(principal(ann), asked, "")
    assert len(page.events) == listed
    assert following == page_token(page.events[-1].id)


async def test_a_negative_page_size_is_refused(security: MemorySecurityStore, ann: Account) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await SecurityLog(security).page(principal(ann), -1, "")
    assert [v.field for v in caught.value.violations] == ["page_size"]


async def test_the_last_page_has_no_next_token(security: MemorySecurityStore, ann: Account) -> None:
    log = SecurityLog(security)
    assert await log.page(principal(ann), 0, "") == (await security.list_events(ann.id, 20, 0), "")
    await log.record(NewEvent(ann.id, EventKind.PASSWORD_CHANGED, PHONE))
    page, following = await log.page(principal(ann), 1, "")
    assert ([e.kind for e in page.events], following) == ([EventKind.PASSWORD_CHANGED], "")


async def test_a_log_that_cannot_be_written_never_fails_the_action(
    security: MemorySecurityStore, ann: Account, caplog: pytest.LogCaptureFixture
) -> None:
    security.failing = Unavailable(message="down", reason=Reason.DEPENDENCY_UNAVAILABLE)
    log = SecurityLog(security)
    with caplog.at_level(logging.WARNING, logger="auth_svc.activity"):
        assert await log.record(NewEvent(ann.id, EventKind.PASSWORD_CHANGED, PHONE)) is False
        log.record_soon(NewEvent(ann.id, EventKind.LOGIN_FAILED, PHONE))
        await log.drain()
    assert [r.getMessage() for r in caplog.records] == ["security event not recorded"] * 2
    assert security.calls == ["record_event", "record_event"]


class SlowStore(MemorySecurityStore):
    """A store whose appends wait until released (data_access slow)."""

    def __init__(self, accounts: MemoryAccountStore) -> None:
        super().__init__(accounts)
        self.release = asyncio.Event()
        self.started = 0

    async def record_event(
        self, event: NewEvent, mail: object = None, *, only_new_device: bool = False
    ) -> bool:
        self.started += 1
        await self.release.wait()
        return await super().record_event(event)


async def test_appends_off_the_reply_path_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    accounts = MemoryAccountStore(FakeClock())
    ann = accounts.add("ann@example.com", "ann")
    store = SlowStore(accounts)
    log = SecurityLog(store)
    extra = 10
    with caplog.at_level(logging.WARNING, logger="auth_svc.activity"):
        for _ in range(MAX_PENDING + extra):
            log.record_soon(NewEvent(ann.id, EventKind.LOGIN_FAILED, PHONE))
        await asyncio.sleep(0)
    assert store.started == MAX_PENDING
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == extra
    store.release.set()
    await log.drain()
    assert len(store.events_of(ann.id)) == MAX_PENDING
    # Once the appends are through, new ones are taken again.
    log.record_soon(NewEvent(ann.id, EventKind.LOGIN_FAILED, PHONE))
    await log.drain()
    assert len(store.events_of(ann.id)) == MAX_PENDING + 1
