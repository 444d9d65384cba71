"""Deleting one's account through Envoy: behind a recent login, hidden at once, restorable by a
login within the grace period, and then gone for good with no personal data left in any table."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.e2e.conftest import DELETION_GRACE_SECONDS
from tests.e2e.support import NewUser, noise_png
from tests.e2e.test_social_graph import Member, names, ok, page, reason

# Tables that may keep the id: the record of the deletion itself, and the change log, whose
# entries say only "profile <id> changed" and are themselves deleted within minutes.
ID_KEEPERS = {"deleted_accounts", "change_log"}


def stale_copy(access_token: str, signing_key_file: Path) -> str:
    """The same access token signed again, still valid, but for a login an hour old."""
    header = jwt.get_unverified_header(access_token)
    claims = jwt.decode(access_token, options={"verify_signature": False})
    key = load_pem_private_key(signing_key_file.read_bytes(), password=None)
    return jwt.encode(
        {**claims, "auth_time": int(time.time()) - 3600},
        key,  # type: ignore[arg-type]
        algorithm="EdDSA",
        headers={"kid": header["kid"]},
    )


def signed_up(http: httpx.Client, *, agent: str = "") -> Member:
    """Register and log in a fresh user, from a browser of the given user agent."""
    tag = uuid.uuid4().hex[:10]
    user = NewUser(f"gone.{tag}@example.com", f"gone_{tag}", f"velvet harbor {tag}")
    headers = {"user-agent": agent} if agent else {}
    body = {"email": user.email, "username": user.username, "password": user.password}
    ok(http.post("/v1/auth:register", json=body, headers=headers))
    tokens = ok(login(http, user, headers))["tokens"]
    return Member(user, tokens)


def login(
    http: httpx.Client, user: NewUser, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST a login."""
    return http.post(
        "/v1/auth:login",
        json={"email": user.email, "password": user.password},
        headers=headers or {},
    )


async def rows_holding(database_url: str, needle: str) -> list[str]:
    """Every "table.column" of the database with a value containing needle (case ignored)."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    found = []
    try:
        async with engine.connect() as connection:
            columns = (
                await connection.execute(
                    text(
                        "SELECT table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema = 'public' AND data_type IN "
                        "('text', 'character varying', 'uuid', 'inet', 'jsonb')"
                    )
                )
            ).all()
            for table, column in columns:
                hits = await connection.scalar(
                    text(
                        f'SELECT count(*) FROM "{table}" '
                        f'WHERE CAST("{column}" AS text) ILIKE :pattern'
                    ),
                    {"pattern": f"%{needle}%"},
                )
                if hits:
                    found.append(f"{table}.{column}")
    finally:
        await engine.dispose()
    return found


async def deleted_for_good(database_url: str, account_id: str) -> bool:
    """Whether the sweeper has moved the account to deleted_accounts."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(
                text("SELECT count(*) FROM deleted_accounts WHERE id = :id"), {"id": account_id}
            )
    finally:
        await engine.dispose()
    return bool(found)


def delete(http: httpx.Client, who: Member) -> httpx.Response:
    """DELETE /v1/profiles/me."""
    return http.delete("/v1/profiles/me", headers=who.auth)


def test_deleting_needs_a_token_and_a_recent_login(
    http: httpx.Client, signing_key_file: Path
) -> None:
    who = signed_up(http)
    assert http.delete("/v1/profiles/me").status_code == 401
    stale = {"authorization": f"Bearer {stale_copy(who.tokens['accessToken'], signing_key_file)}"}
    refused = http.delete("/v1/profiles/me", headers=stale)
    assert (refused.status_code, reason(refused)) == (400, "REAUTHENTICATION_REQUIRED")
    assert ok(page(http, None, f"/v1/profiles/{who.name}"))["profile"]["username"] == who.name


def test_a_deleted_account_is_hidden_and_signed_out_at_once_and_a_login_restores_it(
    http: httpx.Client,
) -> None:
    who, fan = signed_up(http), signed_up(http)
    ok(http.post(f"/v1/profiles/{who.name}:follow", json={}, headers=fan.auth))
    before = time.time()
    answer = ok(delete(http, who))
    # Deleted for good after the grace period (the mesh's: DELETION_GRACE_SECONDS).
    delete_time = datetime.fromisoformat(answer["deleteTime"].replace("Z", "+00:00"))
    grace = delete_time.timestamp() - before
    assert DELETION_GRACE_SECONDS - 1 < grace < DELETION_GRACE_SECONDS + 2

    assert page(http, None, f"/v1/profiles/{who.name}").status_code == 404
    assert page(http, fan, f"/v1/profiles/{who.name}").status_code == 404
    assert names(ok(http.get("/v1/profiles/me/following", headers=fan.auth))) == []
    found = ok(http.get("/v1/profiles:search", params={"query": who.name}, headers=fan.auth))
    assert names(found) == []
    followed = http.post(f"/v1/profiles/{who.name}:follow", json={}, headers=fan.auth)
    assert followed.status_code == 404
    refresh = http.post("/v1/auth:refresh", json={"refreshToken": who.tokens["refreshToken"]})
    assert refresh.status_code == 401

    assert time.time() - before < DELETION_GRACE_SECONDS, "too slow to test the restore"
    again = ok(login(http, who.user))
    assert again["tokens"]["accessToken"]
    back = ok(page(http, fan, f"/v1/profiles/{who.name}"))
    assert back["relationship"]["following"] is True
    assert back["profile"]["followerCount"] == "1"
    # The owner's security log tells both, newest first.
    fresh = {"authorization": f"Bearer {again['tokens']['accessToken']}"}
    log = ok(http.get("/v1/auth/securityEvents", headers=fresh))["events"]
    kinds = [event["kind"] for event in log]
    restored = kinds.index("KIND_ACCOUNT_RESTORED")
    assert kinds.index("KIND_ACCOUNT_DEACTIVATED") > restored
    assert "deleted for good at" in log[kinds.index("KIND_ACCOUNT_DEACTIVATED")]["detail"]


def test_deleting_again_keeps_the_first_date(http: httpx.Client) -> None:
    who = signed_up(http)
    first = ok(delete(http, who))["deleteTime"]
    # The session ended with the first call; the access token still works for its lifetime.
    for _ in range(2):
        assert ok(delete(http, who))["deleteTime"] == first


def upload(http: httpx.Client, who: Member, data: bytes) -> dict[str, Any]:
    """POST an image; its metadata."""
    reply = http.post("/v1/images", content=data, headers=who.auth)
    return dict(ok(reply)["image"])


def blob_path(e2e_state: Path, sha256: str) -> Path:
    """Where the mesh's local blob store keeps a blob."""
    return e2e_state / "blobs" / sha256[:2] / sha256[2:4] / sha256


def test_after_the_grace_period_nothing_personal_is_left_and_the_names_are_free(
    http: httpx.Client, database_url: str, e2e_state: Path
) -> None:
    agent = f"scrub-agent-{uuid.uuid4().hex[:12]}"
    who, fan, idol = signed_up(http, agent=agent), signed_up(http), signed_up(http)
    personal = {
        "displayName": f"Ghost {uuid.uuid4().hex[:8]}",
        "bio": f"bio-{uuid.uuid4().hex}",
        "website": f"https://{uuid.uuid4().hex[:12]}.example.org",
        "pronouns": f"pn{uuid.uuid4().hex[:6]}",
    }
    ok(http.patch("/v1/profiles/me", json=personal, headers=who.auth))
    ok(http.post(f"/v1/profiles/{who.name}:follow", json={}, headers=fan.auth))
    ok(http.post(f"/v1/profiles/{idol.name}:follow", json={}, headers=who.auth))
    ok(http.post(f"/v1/profiles/{fan.name}:block", json={}, headers=idol.auth))
    # One image of its own, and one whose bytes the fan uploaded too (content-addressed: shared).
    own = upload(http, who, noise_png(40, 30))
    shared_bytes = noise_png(30, 40)
    shared = upload(http, who, shared_bytes)
    kept = upload(http, fan, shared_bytes)
    assert shared["sha256"] == kept["sha256"]
    assert blob_path(e2e_state, own["sha256"]).is_file()
    ok(http.post("/v1/profiles/me:setAvatar", json={"imageId": own["id"]}, headers=who.auth))
    account_id = ok(page(http, who, "/v1/profiles/me"))["profile"]["accountId"]
    ok(delete(http, who))

    deadline = time.monotonic() + DELETION_GRACE_SECONDS + 30
    while not asyncio.run(deleted_for_good(database_url, account_id)):
        assert time.monotonic() < deadline, "the sweeper did not delete the account"
        time.sleep(0.5)

    needles: dict[str, Any] = {
        "email": who.user.email.lower(),
        "username": who.name,
        "user agent": agent,
        **personal,
    }
    for what, needle in needles.items():
        assert asyncio.run(rows_holding(database_url, needle)) == [], what
    holders = set(asyncio.run(rows_holding(database_url, account_id)))
    assert holders <= {f"{table}.{column}" for table in ID_KEEPERS for column in ("id", "key")}

    # Its images are gone; the bytes it alone had are deleted, the shared ones stay for the fan.
    assert http.get(f"/v1/images/{own['id']}", headers=fan.auth).status_code == 404
    assert http.get(f"/v1/images/{shared['id']}", headers=fan.auth).status_code == 404
    deadline = time.monotonic() + 30
    while blob_path(e2e_state, own["sha256"]).exists():
        assert time.monotonic() < deadline, "the collector did not delete the blob"
        time.sleep(0.5)
    own_renditions = [r["sha256"] for v in own["variants"] for r in v["renditions"]]
    while any(blob_path(e2e_state, key).exists() for key in own_renditions):
        assert time.monotonic() < deadline, "the collector did not delete the renditions"
        time.sleep(0.5)
    assert blob_path(e2e_state, kept["sha256"]).is_file()
    download = http.get(f"/v1/images/{kept['id']}/variants/original:download", headers=fan.auth)
    assert download.content == shared_bytes
    for variant in kept["variants"]:
        shown = http.get(variant["url"], headers={"accept": "image/webp"})
        assert shown.status_code == 200, variant["name"]

    refused = login(http, who.user)
    assert (refused.status_code, reason(refused)) == (401, "INVALID_CREDENTIALS")
    # The counts of the accounts it followed, and of those that followed it, lost it.
    assert ok(page(http, None, f"/v1/profiles/{idol.name}"))["profile"]["followerCount"] == "0"
    assert ok(page(http, fan, "/v1/profiles/me"))["profile"]["followingCount"] == "0"
    # The username and the email are free again.
    reborn = {"email": who.user.email, "username": who.name, "password": who.user.password}
    assert ok(http.post("/v1/auth:register", json=reborn))["account"]["username"] == who.name
