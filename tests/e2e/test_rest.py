"""The whole slice over REST/JSON through Envoy: what a curl user sees."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import REUSE_WINDOW_SECONDS
from tests.e2e.support import NewUser, expired_copy, new_user, noise_png, png_bytes, rest_sign_in


def register(http: httpx.Client, user: NewUser) -> httpx.Response:
    """POST /v1/auth:register."""
    return http.post(
        "/v1/auth:register",
        json={"email": user.email, "username": user.username, "password": user.password},
    )


def login(http: httpx.Client, email: str, password: str) -> httpx.Response:
    """POST /v1/auth:login."""
    return http.post("/v1/auth:login", json={"email": email, "password": password})


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    """Authorization header for a token pair."""
    return {"authorization": f"Bearer {tokens['accessToken']}"}


def field_violations(reply: httpx.Response) -> dict[str, str]:
    """Map field -> description from a JSON error's BadRequest detail."""
    found: dict[str, str] = {}
    for detail in reply.json().get("details", []):
        for violation in detail.get("fieldViolations", []):
            found[violation["field"]] = violation["description"]
    return found


def error_reason(reply: httpx.Response) -> str:
    """The ErrorInfo reason of a JSON error."""
    for detail in reply.json().get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return str(detail["reason"])
    return ""


def test_full_slice_register_login_profile_avatar_download(http: httpx.Client) -> None:
    user, tokens = rest_sign_in(http)
    assert tokens["tokenType"] == "Bearer"
    assert tokens["expiresIn"] > 0

    me = http.get("/v1/profiles/me", headers=bearer(tokens))
    assert me.status_code == 200
    assert me.json()["profile"]["username"] == user.username

    patched = http.patch(
        "/v1/profiles/me?updateMask=displayName,bio",
        headers=bearer(tokens),
        json={"displayName": "Ada L.", "bio": "Counting machines."},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["profile"]["displayName"] == "Ada L."

    image = png_bytes(40, 30)
    uploaded = http.post(
        "/v1/images",
        headers={**bearer(tokens), "content-type": "image/jpeg"},
        content=image,
    )
    assert uploaded.status_code == 200, uploaded.text
    meta = uploaded.json()["image"]
    # The type comes from the bytes, not from the client's content-type.
    assert meta["contentType"] == "image/png"
    assert (meta["width"], meta["height"]) == (40, 30)
    assert meta["sha256"] == hashlib.sha256(image).hexdigest()

    avatar = http.post(
        "/v1/profiles/me:setAvatar", headers=bearer(tokens), json={"imageId": meta["id"]}
    )
    assert avatar.status_code == 200, avatar.text

    public = http.get(f"/v1/profiles/{user.username.upper()}", headers=bearer(tokens))
    assert public.status_code == 200
    assert public.json()["profile"]["avatarImageId"] == meta["id"]
    assert public.json()["profile"]["bio"] == "Counting machines."

    # Without a variant, the largest rendition: JPEG for a client that does not ask for WebP.
    download = http.get(f"/v1/images/{meta['id']}:download", headers=bearer(tokens))
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/jpeg"
    assert download.headers["etag"] == f'"{hashlib.sha256(download.content).hexdigest()}"'
    assert "immutable" in download.headers["cache-control"]
    largest = next(v for v in meta["variants"] if v["name"] == "w1080")
    assert (largest["width"], largest["height"]) == (40, 30)  # never enlarged
    # The owner gets the original back byte for byte (the mesh keeps originals).
    original = http.get(
        f"/v1/images/{meta['id']}/variants/original:download", headers=bearer(tokens)
    )
    assert original.status_code == 200
    assert original.headers["content-type"] == "image/png"
    assert original.content == image


def test_refresh_rotates_and_old_refresh_token_is_refused(http: httpx.Client) -> None:
    _, tokens = rest_sign_in(http)
    first = http.post("/v1/auth:refresh", json={"refreshToken": tokens["refreshToken"]})
    assert first.status_code == 200
    rotated = first.json()["tokens"]
    assert rotated["refreshToken"] != tokens["refreshToken"]
    assert http.get("/v1/profiles/me", headers=bearer(rotated)).status_code == 200

    time.sleep(REUSE_WINDOW_SECONDS + 0.3)
    replay = http.post("/v1/auth:refresh", json={"refreshToken": tokens["refreshToken"]})
    assert replay.status_code == 401
    assert replay.json()["details"][0]["reason"] == "REFRESH_TOKEN_REUSED"
    # Reuse of a consumed token ends the whole login, including the newest token.
    after = http.post("/v1/auth:refresh", json={"refreshToken": rotated["refreshToken"]})
    assert after.status_code == 401


def test_twenty_tabs_refreshing_at_once_all_stay_signed_in(http: httpx.Client) -> None:
    _, tokens = rest_sign_in(http)
    body = {"refreshToken": tokens["refreshToken"]}
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda _: http.post("/v1/auth:refresh", json=body), range(20)))
    assert [reply.status_code for reply in replies] == [200] * 20
    pairs = [reply.json()["tokens"] for reply in replies]
    # One successor for all of them, and each access token works.
    assert len({pair["refreshToken"] for pair in pairs}) == 1
    assert all(http.get("/v1/profiles/me", headers=bearer(p)).status_code == 200 for p in pairs)
    onwards = http.post("/v1/auth:refresh", json={"refreshToken": pairs[0]["refreshToken"]})
    assert onwards.status_code == 200


def test_logout_ends_the_refresh_token(http: httpx.Client) -> None:
    _, tokens = rest_sign_in(http)
    assert (
        http.post("/v1/auth:logout", json={"refreshToken": tokens["refreshToken"]}).status_code
        == 200
    )
    refused = http.post("/v1/auth:refresh", json={"refreshToken": tokens["refreshToken"]})
    assert refused.status_code == 401
    # Logging out twice is harmless.
    assert (
        http.post("/v1/auth:logout", json={"refreshToken": tokens["refreshToken"]}).status_code
        == 200
    )


def test_a_taken_username_is_409_and_a_taken_email_looks_like_a_new_one(
    http: httpx.Client,
) -> None:
    user = new_user()
    first = register(http, user)
    assert first.status_code == 200
    # A registered email is not told apart from a new one: 200, the same body shape.
    same_email = NewUser(user.email.upper(), new_user().username, user.password)
    reply = register(http, same_email)
    assert reply.status_code == 200
    assert set(reply.json()["account"]) == set(first.json()["account"])
    assert reply.json()["account"]["id"] != first.json()["account"]["id"]
    assert reply.json()["account"]["username"] == same_email.username
    same_name = NewUser(new_user().email, user.username.upper(), user.password)
    reply = register(http, same_name)
    assert reply.status_code == 409
    assert error_reason(reply) == "USERNAME_TAKEN"


@pytest.mark.parametrize("password", ["short", "x" * 1025])
def test_bad_password_length_is_400_naming_the_field(http: httpx.Client, password: str) -> None:
    user = new_user()
    reply = register(http, NewUser(user.email, user.username, password))
    assert reply.status_code == 400
    assert "password" in field_violations(reply)


def test_hundred_character_password_works(http: httpx.Client) -> None:
    user = new_user()
    long_password = "correct horse battery staple " * 3 + "é" * 13
    assert len(long_password) == 100
    assert register(http, NewUser(user.email, user.username, long_password)).status_code == 200
    assert login(http, user.email, long_password).status_code == 200
    # bcrypt alone would only look at the first 72 bytes; a different tail must fail.
    assert login(http, user.email, long_password[:-1] + "x").status_code == 401


def test_every_invalid_field_is_reported_at_once(http: httpx.Client) -> None:
    reply = http.post(
        "/v1/auth:register", json={"email": "not-an-email", "username": "a!", "password": "1"}
    )
    assert reply.status_code == 400
    assert set(field_violations(reply)) == {"email", "username", "password"}


def test_wrong_password_and_unknown_email_look_the_same(http: httpx.Client) -> None:
    user, _ = rest_sign_in(http)
    wrong = login(http, user.email, user.password + "!")
    unknown = login(http, "nobody-" + user.email, user.password)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_missing_garbage_tampered_and_expired_tokens_are_401(
    http: httpx.Client, signing_key_file: Path
) -> None:
    _, tokens = rest_sign_in(http)
    assert http.get("/v1/profiles/me").status_code == 401
    assert http.get("/v1/profiles/me", headers={"authorization": "Bearer nope"}).status_code == 401
    access = tokens["accessToken"]
    tampered = access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB")
    assert (
        http.get("/v1/profiles/me", headers={"authorization": f"Bearer {tampered}"}).status_code
        == 401
    )

    expired = expired_copy(access, signing_key_file)
    reply = http.get("/v1/profiles/me", headers={"authorization": f"Bearer {expired}"})
    assert reply.status_code == 401
    assert error_reason(reply) == "TOKEN_EXPIRED"


def test_uploads_that_are_not_images_or_too_large_are_400(http: httpx.Client) -> None:
    _, tokens = rest_sign_in(http)
    text = http.post(
        "/v1/images",
        headers={**bearer(tokens), "content-type": "image/png"},
        content=b"definitely not a picture",
    )
    assert text.status_code == 400
    assert error_reason(text) == "IMAGE_TYPE_UNSUPPORTED"
    # The suite runs storage_svc with a 2 MiB limit.
    big = http.post(
        "/v1/images",
        headers={**bearer(tokens), "content-type": "image/png"},
        content=png_bytes() + b"\0" * (3 * 1024 * 1024),
    )
    assert big.status_code == 400
    assert error_reason(big) == "IMAGE_TOO_LARGE"


def test_someone_elses_image_cannot_become_my_avatar(http: httpx.Client) -> None:
    _, alice = rest_sign_in(http)
    _, bob = rest_sign_in(http)
    uploaded = http.post("/v1/images", headers=bearer(alice), content=png_bytes())
    image_id = uploaded.json()["image"]["id"]
    reply = http.post("/v1/profiles/me:setAvatar", headers=bearer(bob), json={"imageId": image_id})
    assert reply.status_code == 404


def test_unknown_profile_and_image_are_404(http: httpx.Client) -> None:
    _, tokens = rest_sign_in(http)
    assert http.get("/v1/profiles/no_such_user_zz", headers=bearer(tokens)).status_code == 404
    missing = "/v1/images/00000000-0000-0000-0000-000000000000:download"
    assert http.get(missing, headers=bearer(tokens)).status_code == 404
    assert http.get("/v1/images/not-a-uuid", headers=bearer(tokens)).status_code == 404


def test_patch_without_a_mask_keeps_the_fields_it_leaves_out(http: httpx.Client) -> None:
    _, tokens = rest_sign_in(http)
    first = http.patch(
        "/v1/profiles/me", headers=bearer(tokens), json={"displayName": "Ada", "bio": "old"}
    )
    assert first.status_code == 200, first.text
    patched = http.patch("/v1/profiles/me", headers=bearer(tokens), json={"bio": "new"})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["profile"]["displayName"], patched.json()["profile"]["bio"]) == (
        "Ada",
        "new",
    )
    cleared = http.patch("/v1/profiles/me?updateMask=bio", headers=bearer(tokens), json={})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["profile"]["displayName"] == "Ada"
    assert cleared.json()["profile"].get("bio", "") == ""


def test_oversized_body_is_a_client_error(http: httpx.Client) -> None:
    reply = http.post(
        "/v1/auth:login", json={"email": "big@example.com", "password": "p" * 200_000}
    )
    # The edge refuses JSON bodies over 64 KiB before transcoding (the services' message cap).
    assert reply.status_code == 413, reply.text
    assert reply.json()["code"] == 8  # RESOURCE_EXHAUSTED


def test_large_image_uploads_are_not_held_to_the_json_limit(http: httpx.Client) -> None:
    _, tokens = rest_sign_in(http)
    # Noise compresses badly: a 600x600 PNG of it is about 1 MiB, far over the JSON body limit.
    image = noise_png(600, 600)
    assert len(image) > 512 * 1024
    reply = http.post("/v1/images", headers=bearer(tokens), content=image)
    assert reply.status_code == 200, reply.text
    assert reply.json()["image"]["sizeBytes"] == str(len(image))


def test_bad_update_mask_and_long_bio_are_400(http: httpx.Client) -> None:
    _, tokens = rest_sign_in(http)
    mask = http.patch(
        "/v1/profiles/me?updateMask=username", headers=bearer(tokens), json={"username": "x"}
    )
    assert mask.status_code == 400
    assert "update_mask" in field_violations(mask)
    long_bio = http.patch("/v1/profiles/me", headers=bearer(tokens), json={"bio": "b" * 301})
    assert long_bio.status_code == 400
    assert "profile.bio" in field_violations(long_bio)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/auth:login", b"{not json"),
        ("POST", "/v1/auth:register", b'{"email": 5, "password": ['),
        ("POST", "/v1/auth:login", b'["a list"]'),
    ],
)
def test_malformed_json_is_400_never_5xx(
    http: httpx.Client, method: str, path: str, body: bytes
) -> None:
    reply = http.request(method, path, content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("GET", "/v2/profiles/me"), ("DELETE", "/v1/profile"), ("GET", "/")],
)
def test_unknown_paths_are_404_json(http: httpx.Client, method: str, path: str) -> None:
    reply = http.request(method, path)
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["code"] == 12  # UNIMPLEMENTED, as native gRPC would say


def test_jwks_is_published(http: httpx.Client) -> None:
    reply = http.get("/.well-known/jwks.json")
    assert reply.status_code == 200
    keys = reply.json()["keys"]
    assert keys
    assert {k["kty"] for k in keys} == {"OKP"}
    assert all(k["kid"] and k["x"] for k in keys)


def test_unknown_query_parameter_is_400(http: httpx.Client) -> None:
    _, tokens = rest_sign_in(http)
    reply = http.get("/v1/profiles/me?debug=1", headers=bearer(tokens))
    assert reply.status_code == 400
