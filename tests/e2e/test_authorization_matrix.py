"""Who may call every mutating UserService RPC, through Envoy over REST: a signed-out caller, a
signed-in user, an admin, and the account the call names itself. The mutating RPCs are read
from the proto, so a new one fails here until it has its row."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from google.api import annotations_pb2

from meshgram.user.v1 import user_pb2
from tests.e2e.test_moderation import make_role
from tests.e2e.test_social_graph import Member, member, reason
from tools.http_rules import bindings

# RPC -> (method, path with {target}, body, answer for: anonymous, a user, an admin, the target
# itself). A number is the HTTP status; a pair is the status and the ErrorInfo reason.
MATRIX: dict[str, tuple[str, str, dict[str, Any], Any, Any, Any, Any]] = {
    "UpdateMyProfile": ("PATCH", "/v1/profiles/me", {"bio": "x"}, 401, 200, 200, 200),
    "ChangeUsername": (
        "POST",
        "/v1/profiles/me:changeUsername",
        {"username": "{fresh}"},
        401,
        200,
        200,
        200,
    ),
    "DeleteMyAccount": ("DELETE", "/v1/profiles/me", {}, 401, 200, 200, 200),
    "FollowProfile": ("POST", "/v1/profiles/{target}:follow", {}, 401, 200, 200, 400),
    "UnfollowProfile": ("POST", "/v1/profiles/{target}:unfollow", {}, 401, 200, 200, 400),
    "ApproveFollowRequest": (
        "POST",
        "/v1/profiles/me/followRequests/{target}:approve",
        {},
        401,
        (404, "FOLLOW_REQUEST_NOT_FOUND"),
        (404, "FOLLOW_REQUEST_NOT_FOUND"),
        400,
    ),
    "DenyFollowRequest": (
        "POST",
        "/v1/profiles/me/followRequests/{target}:deny",
        {},
        401,
        (404, "FOLLOW_REQUEST_NOT_FOUND"),
        (404, "FOLLOW_REQUEST_NOT_FOUND"),
        400,
    ),
    "RemoveFollower": ("POST", "/v1/profiles/me/followers/{target}:remove", {}, 401, 200, 200, 400),
    "BlockProfile": ("POST", "/v1/profiles/{target}:block", {}, 401, 200, 200, 400),
    "UnblockProfile": ("POST", "/v1/profiles/{target}:unblock", {}, 401, 200, 200, 400),
    "BlockAccount": (
        "POST",
        "/v1/admin/accounts/{target}:block",
        {"until": "2099-01-01T00:00:00Z", "reason": "matrix"},
        401,
        (403, "ADMIN_REQUIRED"),
        200,
        (403, "ADMIN_REQUIRED"),
    ),
    "UnblockAccount": (
        "POST",
        "/v1/admin/accounts/{target}:unblock",
        {},
        401,
        (403, "ADMIN_REQUIRED"),
        200,
        (403, "ADMIN_REQUIRED"),
    ),
}
CALLERS = ("anonymous", "user", "admin", "target")


def test_the_matrix_covers_every_mutating_user_service_rpc() -> None:
    service = user_pb2.DESCRIPTOR.services_by_name["UserService"]
    mutating = {
        method.name
        for method in service.methods
        for binding in bindings(method.GetOptions().Extensions[annotations_pb2.http])
        if binding.verb in {"POST", "PATCH", "DELETE", "PUT"}
    }
    assert mutating == set(MATRIX)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("rpc", sorted(MATRIX))
def test_each_caller_gets_its_answer(
    http: httpx.Client, database_url: str, rpc: str, caller: str
) -> None:
    method, path, body, *answers = MATRIX[rpc]
    target = member(http)
    acting: Member | None = {
        "anonymous": None,
        "user": member(http),
        "admin": None,
        "target": target,
    }[caller]
    if caller == "admin":
        acting = member(http)
        make_role(database_url, acting, "admin")
    fresh = f"m_{target.name[-10:]}_{caller[:2]}"
    filled = {key: str(value).format(fresh=fresh) for key, value in body.items()}
    headers = {} if acting is None else acting.auth
    reply = http.request(method, path.format(target=target.name), json=filled, headers=headers)
    expected = answers[CALLERS.index(caller)]
    if isinstance(expected, tuple):
        assert (reply.status_code, reason(reply)) == expected, reply.text
    else:
        assert reply.status_code == expected, reply.text
