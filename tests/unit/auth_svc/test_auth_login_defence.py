"""The brute-force defence of logins over an in-memory counter store, on a clock the tests move:
the lockout of one address from one client network, the throttle of a client network, the
CAPTCHA, and what a success forgets."""

from __future__ import annotations

import pytest

from auth_svc.accounts import login_email
from auth_svc.captcha import NoCaptcha
from auth_svc.login_defence import AttemptKeys, DefencePolicy, LoginDefence
from meshkit.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from meshkit.reasons import Reason
from tests.unit.auth_svc.memory_stores import (
    KEY_MAX,
    FakeCaptcha,
    FakeClock,
    MemoryAccountStore,
    MemorySecurityStore,
    defence_over,
)

EMAIL = "ann@example.com"
HOME = "198.51.100.7"
CAFE = "203.0.113.9"


@pytest.fixture
def security() -> MemorySecurityStore:
    return MemorySecurityStore(MemoryAccountStore(FakeClock()))


@pytest.fixture
def defence(security: MemorySecurityStore) -> LoginDefence:
    return defence_over(security)


async def fail(defence: LoginDefence, keys: AttemptKeys, times: int) -> list[bool]:
    """Let in and fail times attempts: whether each one locked."""
    locked = []
    for _ in range(times):
        await defence.admit(keys)
        locked.append(await defence.failed(keys))
    return locked


@pytest.mark.parametrize(
    ("failures", "wait"),
    [(0, 0), (4, 0), (5, 30), (6, 60), (7, 120), (9, 480), (10, 900), (11, 900), (10**9, 900)],
)
def test_the_wait_starts_at_the_threshold_doubles_and_stops_at_the_cap(
    failures: int, wait: int
) -> None:
    policy = DefencePolicy(lock_base_seconds=30, lock_max_seconds=900)
    assert policy.wait(failures, 5) == wait


def test_an_address_is_one_key_whatever_its_case_or_surrounding_spaces(
    defence: LoginDefence,
) -> None:
    assert defence.keys("Ann@Example.COM ", HOME) == defence.keys(EMAIL, HOME)
    other = defence.keys("bob@example.com", HOME)
    here = defence.keys(EMAIL, HOME)
    assert (other.pair, other.subject) != (here.pair, here.subject)
    assert other.client == here.client


@pytest.mark.parametrize(
    ("one", "other", "shared"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", True),
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("::ffff:192.0.2.7", "192.0.2.7", True),
        ("192.0.2.7", "192.0.2.8", False),
    ],
)
def test_clients_are_counted_by_ipv4_address_or_ipv6_64(
    defence: LoginDefence, one: str, other: str, shared: bool
) -> None:
    first, second = defence.keys(EMAIL, one), defence.keys(EMAIL, other)
    assert (first.client == second.client) is shared
    assert (first.pair == second.pair) is shared
    assert first.subject == second.subject
    # The CAPTCHA provider is told the client's own address.
    assert (first.client_ip, second.client_ip) == (one, other)


def test_the_store_never_sees_the_address_in_clear(security: MemorySecurityStore) -> None:
    email = "zoe.quinn@example.org"
    keys = defence_over(security).keys(email, HOME)
    for key in keys.all():
        for part in ("zoe", "quinn", "example", email):
            assert part not in key.lower(), key
        assert len(key) <= KEY_MAX
    # A keyed digest: without the pepper the keys of an address cannot be worked out.
    elsewhere = LoginDefence(security, NoCaptcha(), DefencePolicy(), digest_key=b"another pepper")
    assert elsewhere.keys(email, HOME).subject != keys.subject


def test_the_longest_client_address_makes_keys_the_store_accepts(defence: LoginDefence) -> None:
    keys = defence.keys(
        "a" * 64 + "@" + "b" * 180 + ".com", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    )
    assert all(len(key) <= KEY_MAX for key in keys.all())
    assert len(set(keys.all())) == 3


async def test_failures_lock_the_address_from_that_client_only(
    defence: LoginDefence, security: MemorySecurityStore
) -> None:
    home = defence.keys(EMAIL, HOME)
    assert await fail(defence, home, 5) == [False, False, False, False, True]
    with pytest.raises(ResourceExhausted) as locked:
        await defence.admit(home)
    assert locked.value.reason == Reason.LOGIN_LOCKED
    assert locked.value.retry_after_seconds == 30
    assert "30 s" in locked.value.message
    # Whoever guesses from one network cannot keep the owner out elsewhere.
    await defence.admit(defence.keys(EMAIL, CAFE))
    # Nor another address from that network.
    await defence.admit(defence.keys("bob@example.com", HOME))


async def test_once_the_wait_passed_the_client_may_try_again_and_the_next_wait_doubles(
    defence: LoginDefence, security: MemorySecurityStore
) -> None:
    home = defence.keys(EMAIL, HOME)
    await fail(defence, home, 5)
    security.clock.advance(10)
    with pytest.raises(ResourceExhausted) as waiting:
        await defence.admit(home)
    assert waiting.value.retry_after_seconds == 20
    security.clock.advance(19.5)
    with pytest.raises(ResourceExhausted) as almost:
        await defence.admit(home)
    assert almost.value.retry_after_seconds == 1, "rounded up, never 0"
    security.clock.advance(0.5)
    await defence.admit(home)
    assert await defence.failed(home) is False, "the lock is told once, at its first failure"
    with pytest.raises(ResourceExhausted) as longer:
        await defence.admit(home)
    assert longer.value.retry_after_seconds == 60


async def test_failures_are_forgotten_after_the_reset_time(
    defence: LoginDefence, security: MemorySecurityStore
) -> None:
    home = defence.keys(EMAIL, HOME)
    await fail(defence, home, 4)
    security.clock.advance(DefencePolicy().reset_after_seconds + 1)
    assert await fail(defence, home, 4) == [False] * 4
    await defence.admit(home)


async def test_a_network_failing_across_addresses_is_throttled(
    security: MemorySecurityStore,
) -> None:
    policy = DefencePolicy(client_lock_after=4, client_captcha_after=100, captcha_after=100)
    defence = defence_over(security, policy=policy)
    for n in range(4):
        await fail(defence, defence.keys(f"user{n}@example.com", HOME), 1)
    with pytest.raises(ResourceExhausted) as throttled:
        await defence.admit(defence.keys("someone.new@example.com", HOME))
    assert throttled.value.reason == Reason.TOO_MANY_ATTEMPTS
    assert throttled.value.retry_after_seconds == 30
    await defence.admit(defence.keys("someone.new@example.com", CAFE))


async def test_a_captcha_is_asked_after_failures_on_the_address_from_anywhere(
    security: MemorySecurityStore,
) -> None:
    captcha = FakeCaptcha()
    defence = defence_over(security, captcha=captcha)
    await fail(defence, defence.keys(EMAIL, HOME), 2)
    cafe = defence.keys(EMAIL, CAFE)
    await defence.admit(cafe)
    assert captcha.checked == [], "not before the threshold"
    await fail(defence, defence.keys(EMAIL, HOME), 1)

    with pytest.raises(FailedPrecondition) as required:
        await defence.admit(cafe)
    assert required.value.reason == Reason.CAPTCHA_REQUIRED
    assert required.value.metadata == {"site_key": "unit-site-key"}
    with pytest.raises(InvalidArgument) as refused:
        await defence.admit(cafe, "a made-up token")
    assert refused.value.reason == Reason.CAPTCHA_INVALID
    assert [v.field for v in refused.value.violations] == ["captcha_token"]
    await defence.admit(cafe, "solved")
    assert captcha.checked[-1] == ("solved", CAFE)
    # The second step of a login (and a re-authentication) never asks for one.
    await defence.admit(cafe, ask_captcha=False)


async def test_a_network_failing_across_addresses_is_asked_for_a_captcha(
    security: MemorySecurityStore,
) -> None:
    captcha = FakeCaptcha()
    defence = defence_over(security, captcha=captcha, policy=DefencePolicy(client_captcha_after=3))
    for n in range(3):
        await fail(defence, defence.keys(f"user{n}@example.com", HOME), 1)
    with pytest.raises(FailedPrecondition) as required:
        await defence.admit(defence.keys("fresh@example.com", HOME))
    assert required.value.reason == Reason.CAPTCHA_REQUIRED
    await defence.admit(defence.keys("fresh@example.com", CAFE))


async def test_no_captcha_is_asked_when_none_is_configured(
    defence: LoginDefence,
) -> None:
    await fail(defence, defence.keys(EMAIL, HOME), 4)
    await defence.admit(defence.keys(EMAIL, CAFE))


async def test_a_provider_that_cannot_answer_refuses_the_login(
    security: MemorySecurityStore,
) -> None:
    down = Unavailable(
        message="the CAPTCHA check is unavailable", reason=Reason.CAPTCHA_UNAVAILABLE
    )
    defence = defence_over(security, captcha=FakeCaptcha(down=down))
    await fail(defence, defence.keys(EMAIL, HOME), 3)
    with pytest.raises(Unavailable) as caught:
        await defence.admit(defence.keys(EMAIL, HOME), "solved")
    assert caught.value is down


async def test_a_success_forgets_the_address_but_not_the_network(
    defence: LoginDefence, security: MemorySecurityStore
) -> None:
    home = defence.keys(EMAIL, HOME)
    await fail(defence, home, 4)
    await fail(defence, defence.keys("bob@example.com", HOME), 1)
    admission = await defence.admit(home)
    assert admission.had_failures
    await defence.succeeded(admission)
    pair, subject, client = await security.login_attempts(home.all(), 3600)
    assert (pair.failures, subject.failures, client.failures) == (0, 0, 5)
    # A later failure starts from one again: no lock after four more.
    assert await fail(defence, home, 4) == [False] * 4


async def test_a_success_without_failures_writes_nothing(
    defence: LoginDefence, security: MemorySecurityStore
) -> None:
    admission = await defence.admit(defence.keys(EMAIL, HOME))
    await defence.succeeded(admission)
    assert "clear_login_attempts" not in security.calls


def test_every_spelling_of_one_account_shares_its_counters(defence: LoginDefence) -> None:
    spellings = ["ann@example.com", "ann@\uff45xample.com", "ann@EXAMPLE.com"]
    assert {login_email(s) for s in spellings} == {EMAIL}
    assert len({defence.keys(s, HOME).subject for s in spellings}) == 1
