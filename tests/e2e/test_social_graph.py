"""The profile page, follows, requests, blocks, search and username changes through Envoy: REST as
curl sends it, gRPC-web as a browser sends it, and the authorisation of every mutating call."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from meshgram.user.v1 import user_pb2
from tests.e2e.support import NewUser, grpc_web_frame, grpc_web_unframe, rest_sign_in
from tests.e2e.test_grpc_web import WEB_HEADERS


@dataclass(frozen=True)
class Member:
    """A signed-in user of the REST API."""

    user: NewUser
    tokens: dict[str, Any]

    @property
    def name(self) -> str:
        """The username."""
        return self.user.username

    @property
    def auth(self) -> dict[str, str]:
        """The authorization header."""
        return {"authorization": f"Bearer {self.tokens['accessToken']}"}


def member(http: httpx.Client) -> Member:
    """Register and sign in a fresh user."""
    user, tokens = rest_sign_in(http)
    return Member(user, tokens)


def ok(reply: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 200 answer; fails with the body otherwise."""
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def reason(reply: httpx.Response) -> str:
    """The ErrorInfo reason of a JSON error."""
    for detail in reply.json().get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return str(detail["reason"])
    return ""


def violations(reply: httpx.Response) -> dict[str, str]:
    """Field -> description of a JSON error's BadRequest."""
    found: dict[str, str] = {}
    for detail in reply.json().get("details", []):
        for violation in detail.get("fieldViolations", []):
            found[violation["field"]] = violation["description"]
    return found


def page(http: httpx.Client, who: Member | None, path: str) -> httpx.Response:
    """GET a path as a member or signed out."""
    return http.get(path, headers=who.auth if who else {})


def names(body: dict[str, Any]) -> list[str]:
    """The usernames of a list answer, in order."""
    return [entry["username"] for entry in body.get("profiles", [])]


def rel(**flags: bool) -> dict[str, bool]:
    """A relationship as REST prints it: every flag, false unless given."""
    every = ("following", "followedBy", "requested", "requestedBy", "blocking")
    return {flag: flags.get(flag, False) for flag in every}


def make_private(http: httpx.Client, owner: Member) -> None:
    """Turn an account private."""
    ok(http.patch("/v1/profiles/me", json={"private": True}, headers=owner.auth))


def test_profile_page_shows_each_viewer_kind_what_it_may_see(http: httpx.Client) -> None:
    owner, fan, stranger = member(http), member(http), member(http)
    ok(
        http.patch(
            "/v1/profiles/me",
            json={"displayName": "Ada", "website": "ada.example.org", "pronouns": "she/her"},
            headers=owner.auth,
        )
    )
    ok(http.post(f"/v1/profiles/{owner.name}:follow", json={}, headers=fan.auth))
    make_private(http, owner)
    path = f"/v1/profiles/{owner.name.upper()}"

    mine = ok(page(http, owner, path))
    assert mine["viewer"] == "VIEWER_OWNER"
    assert mine["profile"]["email"] == owner.user.email.lower()
    assert mine["profile"]["website"] == "https://ada.example.org"
    assert mine["contentHidden"] is False

    followed = ok(page(http, fan, path))
    assert followed["viewer"] == "VIEWER_FOLLOWER"
    assert followed["relationship"] == rel(following=True)
    assert followed["contentHidden"] is False

    for viewer, kind in ((stranger, "VIEWER_SIGNED_IN"), (None, "VIEWER_SIGNED_OUT")):
        seen = ok(page(http, viewer, path))
        assert seen["viewer"] == kind
        assert seen["contentHidden"] is True
        header = seen["profile"]
        # The header stays visible; the private fields do not.
        assert (header["displayName"], header["pronouns"], header["followerCount"]) == (
            "Ada",
            "she/her",
            "1",
        )
        assert header["email"] == ""

    for viewer in (fan, stranger, None):
        assert ok(page(http, viewer, path))["profile"]["email"] == ""
    assert ok(http.get("/v1/profiles/me", headers=owner.auth))["profile"]["email"]


def test_a_broken_token_is_refused_rather_than_treated_as_a_visitor(http: httpx.Client) -> None:
    owner = member(http)
    reply = http.get(f"/v1/profiles/{owner.name}", headers={"authorization": "Bearer not.a.token"})
    assert reply.status_code == 401


def test_follow_requests_of_a_private_account(http: httpx.Client) -> None:
    owner, asker, denied = member(http), member(http), member(http)
    make_private(http, owner)

    asked = ok(http.post(f"/v1/profiles/{owner.name}:follow", json={}, headers=asker.auth))
    assert asked["relationship"] == rel(requested=True)
    ok(http.post(f"/v1/profiles/{owner.name}:follow", json={}, headers=denied.auth))
    hidden = http.get(f"/v1/profiles/{owner.name}/followers", headers=asker.auth)
    assert (hidden.status_code, reason(hidden)) == (403, "PROFILE_PRIVATE")

    pending = ok(http.get("/v1/profiles/me/followRequests", headers=owner.auth))
    assert names(pending) == [denied.name, asker.name]
    approved = ok(
        http.post(
            f"/v1/profiles/me/followRequests/{asker.name}:approve", json={}, headers=owner.auth
        )
    )
    assert approved["relationship"] == rel(followedBy=True)
    ok(http.post(f"/v1/profiles/me/followRequests/{denied.name}:deny", json={}, headers=owner.auth))
    again = http.post(
        f"/v1/profiles/me/followRequests/{denied.name}:deny", json={}, headers=owner.auth
    )
    assert (again.status_code, reason(again)) == (404, "FOLLOW_REQUEST_NOT_FOUND")

    assert ok(page(http, owner, f"/v1/profiles/{owner.name}"))["profile"]["followerCount"] == "1"
    assert names(ok(http.get(f"/v1/profiles/{owner.name}/followers", headers=asker.auth))) == [
        asker.name
    ]
    assert names(ok(http.get("/v1/profiles/me/following", headers=asker.auth))) == [owner.name]

    removed = ok(
        http.post(f"/v1/profiles/me/followers/{asker.name}:remove", json={}, headers=owner.auth)
    )
    assert removed["relationship"] == rel()
    assert ok(page(http, owner, "/v1/profiles/me"))["profile"]["followerCount"] == "0"


def test_going_public_approves_every_pending_request(http: httpx.Client) -> None:
    owner, first, second = member(http), member(http), member(http)
    make_private(http, owner)
    for asker in (first, second):
        ok(http.post(f"/v1/profiles/{owner.name}:follow", json={}, headers=asker.auth))
    reply = http.patch(
        "/v1/profiles/me?updateMask=private", json={"private": False}, headers=owner.auth
    )
    assert ok(reply)["profile"]["followerCount"] == "2"
    assert ok(page(http, first, f"/v1/profiles/{owner.name}"))["viewer"] == "VIEWER_FOLLOWER"


def test_follow_and_unfollow_repeat_safely_and_counts_stay_exact(http: httpx.Client) -> None:
    star = member(http)
    fans = [member(http) for _ in range(20)]
    one = fans[0]

    def follow(fan: Member) -> int:
        """Follow the star as fan; the status code."""
        return http.post(f"/v1/profiles/{star.name}:follow", json={}, headers=fan.auth).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert set(pool.map(follow, [one] * 20)) == {200}
    assert ok(page(http, None, f"/v1/profiles/{star.name}"))["profile"]["followerCount"] == "1"
    with ThreadPoolExecutor(max_workers=20) as pool:
        assert set(pool.map(follow, fans)) == {200}
    counted = ok(page(http, None, f"/v1/profiles/{star.name}"))["profile"]
    assert counted["followerCount"] == "20"
    assert ok(page(http, one, "/v1/profiles/me"))["profile"]["followingCount"] == "1"

    for _ in range(2):
        left = http.post(f"/v1/profiles/{star.name}:unfollow", json={}, headers=one.auth)
        assert ok(left)["relationship"] == rel()
    assert ok(page(http, None, f"/v1/profiles/{star.name}"))["profile"]["followerCount"] == "19"


def test_lists_page_with_opaque_tokens_that_stay_stable_while_follows_arrive(
    http: httpx.Client,
) -> None:
    star = member(http)
    fans = [member(http) for _ in range(5)]
    for fan in fans:
        ok(http.post(f"/v1/profiles/{star.name}:follow", json={}, headers=fan.auth))
    first = ok(http.get(f"/v1/profiles/{star.name}/followers?pageSize=2", headers=star.auth))
    assert names(first) == [fans[4].name, fans[3].name]
    late = member(http)
    ok(http.post(f"/v1/profiles/{star.name}:follow", json={}, headers=late.auth))
    seen = names(first)
    token = first["nextPageToken"]
    while token:
        body = ok(
            http.get(
                f"/v1/profiles/{star.name}/followers",
                params={"pageSize": 2, "pageToken": token},
                headers=star.auth,
            )
        )
        seen += names(body)
        token = body["nextPageToken"]
    assert seen == [fan.name for fan in reversed(fans)]

    other = member(http)
    foreign = http.get(
        f"/v1/profiles/{other.name}/followers",
        params={"pageToken": first["nextPageToken"]},
        headers=star.auth,
    )
    assert foreign.status_code == 400
    assert "page_token" in violations(foreign)
    junk = http.get(
        f"/v1/profiles/{star.name}/followers", params={"pageToken": "%%%"}, headers=star.auth
    )
    assert junk.status_code == 400


def test_a_block_ends_follows_and_hides_each_from_the_other(http: httpx.Client) -> None:
    blocker, pest, bystander = member(http), member(http), member(http)
    ok(http.patch("/v1/profiles/me", json={"displayName": "Blocker"}, headers=blocker.auth))
    for a, b in ((blocker, pest), (pest, blocker), (pest, bystander)):
        ok(http.post(f"/v1/profiles/{b.name}:follow", json={}, headers=a.auth))
    ok(http.post(f"/v1/profiles/{blocker.name}:follow", json={}, headers=bystander.auth))

    blocked = ok(http.post(f"/v1/profiles/{pest.name}:block", json={}, headers=blocker.auth))
    assert blocked["relationship"] == rel(blocking=True)
    mine = ok(page(http, blocker, "/v1/profiles/me"))["profile"]
    assert (mine["followerCount"], mine["followingCount"]) == ("1", "0")

    gone = http.get(f"/v1/profiles/{blocker.name}", headers=pest.auth)
    assert (gone.status_code, reason(gone)) == (404, "PROFILE_NOT_FOUND")
    refused = http.post(f"/v1/profiles/{blocker.name}:follow", json={}, headers=pest.auth)
    assert (refused.status_code, reason(refused)) == (404, "PROFILE_NOT_FOUND")
    own = http.post(f"/v1/profiles/{pest.name}:follow", json={}, headers=blocker.auth)
    assert (own.status_code, reason(own)) == (400, "PROFILE_BLOCKED")
    shown = ok(page(http, blocker, f"/v1/profiles/{pest.name}"))
    assert shown["relationship"] == rel(blocking=True)

    # The bystander's list of followings holds the blocker; the pest cannot see it there.
    listed = ok(http.get(f"/v1/profiles/{bystander.name}/following", headers=pest.auth))
    assert blocker.name not in names(listed)
    found = ok(http.get("/v1/profiles:search", params={"query": blocker.name}, headers=pest.auth))
    assert names(found) == []
    assert names(ok(http.get("/v1/profiles/me/blocked", headers=blocker.auth))) == [pest.name]

    ok(http.post(f"/v1/profiles/{pest.name}:unblock", json={}, headers=blocker.auth))
    ok(http.post(f"/v1/profiles/{pest.name}:unblock", json={}, headers=blocker.auth))
    back = ok(page(http, pest, f"/v1/profiles/{blocker.name}"))
    # Follows the block ended do not come back.
    assert back["relationship"] == rel()


def test_search_puts_the_exact_username_first(http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:6]
    exact, longer, named = member(http), member(http), member(http)
    for who, username in ((exact, f"s{tag}"), (longer, f"s{tag}_z"), (named, f"q{tag}")):
        ok(
            http.post(
                "/v1/profiles/me:changeUsername", json={"username": username}, headers=who.auth
            )
        )
    ok(http.patch("/v1/profiles/me", json={"displayName": f"S{tag} Fan"}, headers=named.auth))
    body = ok(http.get("/v1/profiles:search", params={"query": f"@S{tag}"}, headers=exact.auth))
    assert names(body) == [f"s{tag}", f"s{tag}_z", f"q{tag}"]
    first = ok(
        http.get(
            "/v1/profiles:search", params={"query": f"s{tag}", "pageSize": 1}, headers=exact.auth
        )
    )
    second = ok(
        http.get(
            "/v1/profiles:search",
            params={"query": f"s{tag}", "pageSize": 1, "pageToken": first["nextPageToken"]},
            headers=exact.auth,
        )
    )
    assert names(first) + names(second) == [f"s{tag}", f"s{tag}_z"]
    assert (
        http.get("/v1/profiles:search", params={"query": "  "}, headers=exact.auth).status_code
        == 400
    )
    assert http.get("/v1/profiles:search", params={"query": "ab"}).status_code == 401


def test_username_changes_follow_the_sign_up_rules_and_a_cooldown(http: httpx.Client) -> None:
    renamer, other = member(http), member(http)
    for reserved in ("admin", "API", "www", "static", "auth", "Search"):
        reply = http.post(
            "/v1/profiles/me:changeUsername", json={"username": reserved}, headers=renamer.auth
        )
        assert reply.status_code == 400, reserved
        assert "reserved" in violations(reply)["username"]
    bad = http.post(
        "/v1/profiles/me:changeUsername", json={"username": "a..b"}, headers=renamer.auth
    )
    assert bad.status_code == 400
    assert "username" in violations(bad)
    taken = http.post(
        "/v1/profiles/me:changeUsername", json={"username": other.name}, headers=renamer.auth
    )
    assert (taken.status_code, reason(taken)) == (409, "USERNAME_TAKEN")

    fresh = f"r_{uuid.uuid4().hex[:10]}"
    renamed = ok(
        http.post(
            "/v1/profiles/me:changeUsername", json={"username": fresh.upper()}, headers=renamer.auth
        )
    )
    assert renamed["profile"]["username"] == fresh
    assert ok(page(http, None, f"/v1/profiles/{fresh}"))["profile"]["username"] == fresh
    assert page(http, None, f"/v1/profiles/{renamer.name}").status_code == 404

    again = http.post(
        "/v1/profiles/me:changeUsername",
        json={"username": f"{fresh}_2"},
        headers=renamer.auth,
    )
    assert (again.status_code, reason(again)) == (429, "USERNAME_CHANGE_TOO_SOON")
    assert int(again.headers["retry-after"]) > 0


@pytest.mark.parametrize(
    ("website", "message"),
    [
        ("javascript:alert(1)", "http or https"),
        ("ftp://example.com", "http or https"),
        ("https://user:pw@example.com", "user name or password"),
        ("https://" + "a" * 200 + ".com", "at most 200"),
    ],
)
def test_bad_websites_are_refused_with_the_field_named(
    http: httpx.Client, website: str, message: str
) -> None:
    who = member(http)
    reply = http.patch("/v1/profiles/me", json={"website": website}, headers=who.auth)
    assert reply.status_code == 400
    assert message in violations(reply)["profile.website"]


MUTATIONS = [
    ("PATCH", "/v1/profiles/me", {"bio": "x"}),
    ("POST", "/v1/profiles/me:changeUsername", {"username": "someone_new"}),
    ("POST", "/v1/profiles/{target}:follow", {}),
    ("POST", "/v1/profiles/{target}:unfollow", {}),
    ("POST", "/v1/profiles/me/followRequests/{target}:approve", {}),
    ("POST", "/v1/profiles/me/followRequests/{target}:deny", {}),
    ("POST", "/v1/profiles/me/followers/{target}:remove", {}),
    ("POST", "/v1/profiles/{target}:block", {}),
    ("POST", "/v1/profiles/{target}:unblock", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
@pytest.mark.parametrize("credential", ["none", "garbage", "other scheme"])
def test_every_mutation_needs_a_valid_access_token(
    http: httpx.Client, method: str, path: str, body: dict[str, Any], credential: str
) -> None:
    target = member(http)
    headers = {
        "none": {},
        "garbage": {"authorization": "Bearer eyJ.garbage.token"},
        "other scheme": {"authorization": f"Basic {target.tokens['accessToken']}"},
    }[credential]
    reply = http.request(method, path.format(target=target.name), json=body, headers=headers)
    assert reply.status_code == 401, reply.text
    # Nothing changed for the account the call named.
    profile = ok(page(http, target, "/v1/profiles/me"))["profile"]
    assert (profile["followerCount"], profile["followingCount"]) == ("0", "0")


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS[2:])
def test_no_mutation_acts_on_oneself_or_a_missing_account(
    http: httpx.Client, method: str, path: str, body: dict[str, Any]
) -> None:
    who = member(http)
    mine = http.request(method, path.format(target=who.name), json=body, headers=who.auth)
    assert mine.status_code == 400
    assert "username" in violations(mine)
    missing = http.request(
        method, path.format(target=f"nobody_{uuid.uuid4().hex[:8]}"), json=body, headers=who.auth
    )
    assert (missing.status_code, reason(missing)) == (404, "PROFILE_NOT_FOUND")


def test_what_one_user_does_never_changes_another_users_graph(http: httpx.Client) -> None:
    owner, requester, intruder = member(http), member(http), member(http)
    make_private(http, owner)
    ok(http.post(f"/v1/profiles/{owner.name}:follow", json={}, headers=requester.auth))
    # The intruder cannot approve a request made to someone else, nor remove their followers.
    approve = http.post(
        f"/v1/profiles/me/followRequests/{requester.name}:approve", json={}, headers=intruder.auth
    )
    assert (approve.status_code, reason(approve)) == (404, "FOLLOW_REQUEST_NOT_FOUND")
    ok(
        http.post(
            f"/v1/profiles/me/followers/{requester.name}:remove", json={}, headers=intruder.auth
        )
    )
    still = ok(page(http, requester, f"/v1/profiles/{owner.name}"))
    assert still["relationship"] == rel(requested=True)
    assert names(ok(http.get("/v1/profiles/me/followRequests", headers=owner.auth))) == [
        requester.name
    ]


def test_a_browser_reads_a_profile_page_signed_out_over_grpc_web(http: httpx.Client) -> None:
    owner = member(http)
    request = user_pb2.GetProfileRequest(username=owner.name)
    reply = http.post(
        "/meshgram.user.v1.UserService/GetProfile",
        content=grpc_web_frame(request.SerializeToString()),
        headers=WEB_HEADERS,
    )
    messages, trailers = grpc_web_unframe(reply.content)
    assert trailers["grpc-status"] == "0"
    answer = user_pb2.GetProfileResponse.FromString(messages[0])
    assert answer.viewer == user_pb2.VIEWER_SIGNED_OUT
    assert (answer.profile.username, answer.profile.email) == (owner.name, "")
