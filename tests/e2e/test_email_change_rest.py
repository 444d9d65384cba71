"""Changing the email address through the edge over REST: the link to the new address, the
notices to the old one, the re-authentication it needs, and its refusals."""

from __future__ import annotations

import uuid

import httpx

from auth_svc.mail.messages import VERIFY_EMAIL_PATH
from tests.e2e.support import link_token, mails_to, rest_sign_in
from tests.e2e.test_rest import bearer, error_reason, field_violations
from tools.mesh import Mesh


def test_an_email_change_is_confirmed_from_the_new_address_over_rest(
    http: httpx.Client, mesh: Mesh
) -> None:
    user, tokens = rest_sign_in(http)
    moved = f"moved.{uuid.uuid4().hex[:10]}@example.com"
    asked = http.post("/v1/auth:changeEmail", json={"newEmail": moved}, headers=bearer(tokens))
    assert (asked.status_code, asked.json()) == (200, {})

    [link] = mails_to(mesh, moved, 1)
    notices = mails_to(mesh, user.email.lower(), 2)  # the sign-up verification, the notice
    assert moved in notices[-1].text()
    done = http.post("/v1/auth:verifyEmail", json={"token": link_token(link, VERIFY_EMAIL_PATH)})
    assert done.status_code == 200, done.text
    assert (done.json()["account"]["email"], done.json()["account"]["emailVerified"]) == (
        moved,
        True,
    )
    old = http.post("/v1/auth:login", json={"email": user.email, "password": user.password})
    assert old.status_code == 401
    new = http.post("/v1/auth:login", json={"email": moved, "password": user.password})
    assert new.status_code == 200, new.text


def test_bad_email_changes_get_clear_answers(http: httpx.Client) -> None:
    user, tokens = rest_sign_in(http)
    missing = http.post("/v1/auth:changeEmail", json={"newEmail": "x@example.com"})
    assert (missing.status_code, error_reason(missing)) == (401, "TOKEN_MISSING")
    for wrong in ("", "no-at-sign", user.email.upper()):
        reply = http.post("/v1/auth:changeEmail", json={"newEmail": wrong}, headers=bearer(tokens))
        assert reply.status_code == 400, reply.text
        assert list(field_violations(reply)) == ["new_email"]
