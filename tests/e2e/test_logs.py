"""What operators see: JSON logs that follow one request across the mesh, and no secrets."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.support import new_user, wait_for_request
from tools.mesh import Mesh


def test_a_client_cannot_choose_its_request_id(edge_url: str) -> None:
    with httpx.Client(base_url=edge_url, timeout=30) as http:
        reply = http.get(
            "/.well-known/jwks.json",
            headers={"x-request-id": "chosen-by-the-client", "x-forwarded-for": "203.0.113.9"},
        )
    assert reply.status_code == 200
    assert reply.headers["x-request-id"] not in ("", "chosen-by-the-client")


def test_one_request_id_follows_a_call_through_every_hop(mesh: Mesh, edge_url: str) -> None:
    user = new_user()
    with httpx.Client(base_url=edge_url, timeout=30) as http:
        http.post(
            "/v1/auth:register",
            json={"email": user.email, "username": user.username, "password": user.password},
        )
        login = http.post("/v1/auth:login", json={"email": user.email, "password": user.password})
        token = login.json()["tokens"]["accessToken"]
        # A failing call is logged by every service it crosses (successes only at DEBUG).
        reply = http.get(
            "/v1/profiles/nobody_by_this_name", headers={"authorization": f"Bearer {token}"}
        )
    assert reply.status_code == 404
    request_id = reply.headers["x-request-id"]

    in_user_svc = wait_for_request(mesh, "user_svc", request_id)
    in_data_access = wait_for_request(mesh, "data_access", request_id)
    assert [(line["method"], line["code"]) for line in in_user_svc] == [
        ("/meshgram.user.v1.UserService/GetProfile", "NOT_FOUND")
    ]
    assert [(line["method"], line["code"]) for line in in_data_access] == [
        ("/meshgram.dataaccess.v1.ProfileStoreService/GetProfile", "NOT_FOUND")
    ]
    assert in_user_svc[0]["service"] == "user_svc"
    edge = wait_for_request(mesh, "envoy", request_id)
    assert edge, "the edge's access log has no line for the request"
    assert edge[0]["path"] == "/v1/profiles/nobody_by_this_name"
    assert edge[0]["status"] == 404


def test_passwords_and_tokens_never_reach_the_logs(mesh: Mesh, edge_url: str) -> None:
    user = new_user()
    wrong = user.password + "-but-wrong"
    with httpx.Client(base_url=edge_url, timeout=30) as http:
        http.post(
            "/v1/auth:register",
            json={"email": user.email, "username": user.username, "password": user.password},
        )
        http.post("/v1/auth:login", json={"email": user.email, "password": wrong})
        tokens = http.post(
            "/v1/auth:login", json={"email": user.email, "password": user.password}
        ).json()["tokens"]
        http.post("/v1/auth:refresh", json={"refreshToken": tokens["refreshToken"]})
        # A replayed refresh token is an error path: it must not be echoed either.
        http.post("/v1/auth:refresh", json={"refreshToken": tokens["refreshToken"]})
    assert mesh.log_dir is not None
    everything = "\n".join(path.read_text() for path in Path(mesh.log_dir).glob("*.log"))
    for secret in (user.password, wrong, tokens["accessToken"], tokens["refreshToken"]):
        assert secret not in everything


def test_a_token_with_bytes_that_are_not_utf8_never_reaches_the_logs(
    mesh: Mesh, edge_url: str
) -> None:
    secret = "abc-secret-token-tail"
    raw = b"Bearer \xff\xfe" + secret.encode()
    with httpx.Client(base_url=edge_url, timeout=30) as http:
        replies = [
            http.get("/v1/profiles/me", headers={"authorization": raw}),
            http.get("/v1/images/abc", headers={"authorization": raw}),
        ]
    assert [reply.status_code for reply in replies] == [401, 401]
    for reply in replies:
        # Flushed once the call's own lines are there (the edge logs every request).
        assert wait_for_request(mesh, "envoy", reply.headers["x-request-id"])
    assert mesh.log_dir is not None
    everything = "\n".join(path.read_text() for path in Path(mesh.log_dir).glob("*.log"))
    assert secret not in everything
    assert "Traceback" not in everything
