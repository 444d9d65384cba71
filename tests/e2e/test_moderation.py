"""Admins through Envoy: the first admin made by the operator's command, account status, blocks
with `blocked_till` that end sessions and refuse logins, and the audit log; and everyone else
refused."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from meshgram_client import aio

from data_access.database import open_database
from data_access.moderation import set_role
from meshgram.user.v1 import user_pb2, user_pb2_grpc
from tests.e2e.support import rest_sign_in
from tests.e2e.test_social_graph import Member, member, ok, reason, violations


def make_role(database_url: str, who: Member, role: str) -> None:
    """Give a member a role as `make admin` does."""

    async def run() -> None:
        """Set the role through one short-lived pool."""
        database = open_database(database_url, pool_size=1, max_overflow=0)
        try:
            await set_role(database, who.user.email, role)
        finally:
            await database.dispose()

    asyncio.run(run())


@pytest.fixture
def admin(http: httpx.Client, database_url: str) -> Member:
    """A signed-in admin."""
    who = member(http)
    make_role(database_url, who, "admin")
    return who


def later(seconds: float) -> str:
    """An RFC 3339 time this many seconds from now."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def block(
    http: httpx.Client, by: Member, target: Member, *, seconds: float = 3600, why: str = "spam"
) -> httpx.Response:
    """POST a block of target by an admin."""
    return http.post(
        f"/v1/admin/accounts/{target.name}:block",
        json={"until": later(seconds), "reason": why},
        headers=by.auth,
    )


def login(http: httpx.Client, who: Member) -> httpx.Response:
    """POST a login with the member's password."""
    return http.post(
        "/v1/auth:login", json={"email": who.user.email, "password": who.user.password}
    )


def audit(http: httpx.Client, by: Member, target: Member) -> list[dict[str, Any]]:
    """The audit log of one account, newest first."""
    body = ok(http.get("/v1/admin/auditEvents", params={"username": target.name}, headers=by.auth))
    return list(body["events"])


def test_an_admin_reads_an_account_and_the_read_is_audited(
    http: httpx.Client, admin: Member
) -> None:
    target = member(http)
    status = ok(http.get(f"/v1/admin/accounts/{target.name.upper()}", headers=admin.auth))["status"]
    assert (status["username"], status["email"], status["role"]) == (
        target.name,
        target.user.email.lower(),
        "user",
    )
    assert "blockedTill" not in status
    (entry,) = audit(http, admin, target)
    assert (entry["action"], entry["actorUsername"], entry["accountUsername"]) == (
        "account_viewed",
        admin.name,
        target.name,
    )


def test_a_block_ends_sessions_at_once_and_refuses_logins_until_lifted(
    http: httpx.Client, admin: Member
) -> None:
    target = member(http)
    blocked = ok(block(http, admin, target, why="spam links"))["status"]
    assert blocked["blockedReason"] == "spam links"
    assert blocked["blockedTill"]

    refresh = http.post("/v1/auth:refresh", json={"refreshToken": target.tokens["refreshToken"]})
    assert refresh.status_code == 401
    refused = login(http, target)
    assert (refused.status_code, reason(refused)) == (403, "ACCOUNT_BLOCKED")
    assert "blocked until" in refused.json()["message"]

    lifted = ok(
        http.post(
            f"/v1/admin/accounts/{target.name}:unblock",
            json={"reason": "appeal accepted"},
            headers=admin.auth,
        )
    )["status"]
    assert "blockedTill" not in lifted
    assert ok(login(http, target))["tokens"]["accessToken"]
    actions = [entry["action"] for entry in audit(http, admin, target)]
    assert actions == ["account_unblocked", "account_blocked"]


def test_a_block_ends_on_its_time_without_anyone_lifting_it(
    http: httpx.Client, admin: Member
) -> None:
    target = member(http)
    ok(block(http, admin, target, seconds=2))
    assert login(http, target).status_code == 403
    time.sleep(2.5)
    assert ok(login(http, target))["tokens"]["accessToken"]
    status = ok(http.get(f"/v1/admin/accounts/{target.name}", headers=admin.auth))["status"]
    assert "blockedTill" not in status


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "spam"}, "until"),
        ({"until": "2001-01-01T00:00:00Z", "reason": "spam"}, "until"),
        ({"until": "2999-01-01T00:00:00Z", "reason": "spam"}, "until"),
        ({"until": "2030-01-01T00:00:00Z", "reason": "  "}, "reason"),
        ({"until": "2030-01-01T00:00:00Z", "reason": "x" * 501}, "reason"),
    ],
)
def test_bad_blocks_are_refused_with_the_field_named(
    http: httpx.Client, admin: Member, body: dict[str, str], field: str
) -> None:
    target = member(http)
    reply = http.post(f"/v1/admin/accounts/{target.name}:block", json=body, headers=admin.auth)
    assert reply.status_code == 400
    assert field in violations(reply)
    assert login(http, target).status_code == 200


def test_admins_cannot_be_blocked(http: httpx.Client, admin: Member, database_url: str) -> None:
    other = member(http)
    make_role(database_url, other, "admin")
    for target in (other, admin):
        reply = block(http, admin, target)
        assert (reply.status_code, reason(reply)) == (400, "ACCOUNT_IS_ADMIN")


def test_a_revoked_role_is_refused_at_once_whatever_the_token(
    http: httpx.Client, admin: Member, database_url: str
) -> None:
    target = member(http)
    ok(http.get(f"/v1/admin/accounts/{target.name}", headers=admin.auth))
    make_role(database_url, admin, "user")
    reply = http.get(f"/v1/admin/accounts/{target.name}", headers=admin.auth)
    assert (reply.status_code, reason(reply)) == (403, "ADMIN_REQUIRED")


def test_unknown_accounts_are_not_found_for_admins(http: httpx.Client, admin: Member) -> None:
    reply = http.get("/v1/admin/accounts/nobody_here_at_all", headers=admin.auth)
    assert (reply.status_code, reason(reply)) == (404, "ACCOUNT_NOT_FOUND")


ADMIN_CALLS = [
    ("GET", "/v1/admin/accounts/{target}", None),
    ("POST", "/v1/admin/accounts/{target}:block", {"until": "2030-01-01T00:00:00Z", "reason": "x"}),
    ("POST", "/v1/admin/accounts/{target}:unblock", {}),
    ("GET", "/v1/admin/auditEvents", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_admin_calls_refuse_everyone_but_admins(
    http: httpx.Client, method: str, path: str, body: dict[str, str] | None
) -> None:
    target = member(http)
    stranger = member(http)
    url = path.format(target=target.name)
    anonymous = http.request(method, url, json=body)
    assert anonymous.status_code == 401
    for who in (stranger, target):
        refused = http.request(method, url, json=body, headers=who.auth)
        assert (refused.status_code, reason(refused)) == (403, "ADMIN_REQUIRED")
    # Nothing happened: the target still logs in.
    assert login(http, target).status_code == 200


def test_the_audit_log_pages_newest_first(http: httpx.Client, admin: Member) -> None:
    target = member(http)
    for _ in range(3):
        ok(http.get(f"/v1/admin/accounts/{target.name}", headers=admin.auth))
    first = ok(
        http.get(
            "/v1/admin/auditEvents",
            params={"username": target.name, "pageSize": 2},
            headers=admin.auth,
        )
    )
    assert len(first["events"]) == 2
    rest = ok(
        http.get(
            "/v1/admin/auditEvents",
            params={"username": target.name, "pageSize": 2, "pageToken": first["nextPageToken"]},
            headers=admin.auth,
        )
    )
    assert len(rest["events"]) == 1
    assert rest["nextPageToken"] == ""
    times = [event["createTime"] for event in first["events"] + rest["events"]]
    assert times == sorted(times, reverse=True)


async def test_a_blocked_account_is_refused_over_native_grpc_too(
    http: httpx.Client, admin: Member, client: aio.Session
) -> None:
    user, tokens = rest_sign_in(http)
    ok(block(http, admin, Member(user, tokens)))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.login(user.email, user.password)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_block_with_an_impossible_time_is_invalid_not_internal(
    http: httpx.Client, admin: Member, edge_channel: grpc.aio.Channel
) -> None:
    # Found by fuzzing: a Timestamp with negative nanos used to end as INTERNAL.
    target = member(http)
    users = user_pb2_grpc.UserServiceStub(edge_channel)
    request = user_pb2.BlockAccountRequest(username=target.name, reason="spam")
    request.until.seconds, request.until.nanos = 4_000_000_000, -1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await users.BlockAccount(
            request, metadata=(("authorization", admin.auth["authorization"]),)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert login(http, target).status_code == 200
