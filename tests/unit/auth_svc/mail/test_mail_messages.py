"""Rendering of auth_svc's mails: both parts, links with the token in the fragment, lifetimes,
escaping of the HTML part, and no way for a value to add a header."""

from __future__ import annotations

import email.policy
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from auth_svc.accounts import MailKind
from auth_svc.mail.messages import DEVICE_MAX, MailRenderer, describe_duration

PUBLIC_URL = "https://app.example.test"
FROM = "meshgram <no-reply@example.test>"
TO = "ada@example.org"
TOKEN = "Zt3_q-4fXbW9kR2mVn8pL0sYc7uHjE5a"
CHANGED_AT = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
DEVICE = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0 (203.0.113.9)"


@pytest.fixture
def renderer() -> MailRenderer:
    return MailRenderer(public_url=PUBLIC_URL, sender=FROM)


def parts(message: EmailMessage) -> tuple[str, str]:
    """The plain-text and HTML parts of a mail."""
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    return plain.get_content(), html.get_content()


def reparsed(message: EmailMessage) -> EmailMessage:
    """The mail as a receiving server reads it from the wire."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(message.as_bytes())
    assert isinstance(parsed, EmailMessage)
    return parsed


def render_each(renderer: MailRenderer) -> dict[MailKind, EmailMessage]:
    return {
        MailKind.VERIFY_EMAIL: renderer.render(
            "verify_email", to=TO, token=TOKEN, lifetime=timedelta(hours=24)
        ),
        MailKind.RESET_PASSWORD: renderer.render(
            "reset_password", to=TO, token=TOKEN, lifetime=timedelta(minutes=30)
        ),
        MailKind.PASSWORD_CHANGED: renderer.render(
            "password_changed", to=TO, changed_at=CHANGED_AT
        ),
        MailKind.SIGNUP_ATTEMPT: renderer.render("signup_attempt", to=TO),
        MailKind.MFA_ENABLED: renderer.render("mfa_enabled", to=TO, changed_at=CHANGED_AT),
        MailKind.MFA_DISABLED: renderer.render("mfa_disabled", to=TO, changed_at=CHANGED_AT),
        MailKind.NEW_DEVICE_LOGIN: renderer.render(
            "new_device_login", to=TO, changed_at=CHANGED_AT, device=DEVICE
        ),
        MailKind.CONFIRM_EMAIL_CHANGE: renderer.render(
            "confirm_email_change", to=TO, token=TOKEN, lifetime=timedelta(hours=24)
        ),
        MailKind.EMAIL_CHANGE_REQUESTED: renderer.render(
            "email_change_requested", to=TO, changed_at=CHANGED_AT, new_email="new@example.org"
        ),
        MailKind.EMAIL_CHANGED: renderer.render("email_changed", to=TO, changed_at=CHANGED_AT),
    }


def test_an_email_change_links_to_the_verification_page_and_names_the_new_address(
    renderer: MailRenderer,
) -> None:
    plain, html = parts(render_each(renderer)[MailKind.CONFIRM_EMAIL_CHANGE])
    assert f"/account/verify-email#token={TOKEN}" in plain
    assert f"/account/verify-email#token={TOKEN}" in html
    plain, html = parts(render_each(renderer)[MailKind.EMAIL_CHANGE_REQUESTED])
    assert "new@example.org" in plain
    assert "new@example.org" in html
    assert "/account/reset-password" in plain


def test_an_email_change_notice_refuses_a_new_address_that_could_forge_headers(
    renderer: MailRenderer,
) -> None:
    with pytest.raises(ValueError, match="line breaks"):
        renderer.render(
            "email_change_requested",
            to=TO,
            changed_at=CHANGED_AT,
            new_email="a@example.org\nBcc: victim@example.org",
        )


def test_every_kind_has_the_headers_and_a_plain_and_an_html_part(renderer: MailRenderer) -> None:
    ids = set()
    for kind, message in render_each(renderer).items():
        received = reparsed(message)
        assert received["From"] == FROM
        assert received["To"] == TO
        assert received["Subject"], kind
        assert received["Date"].datetime.tzinfo is not None
        ids.add(received["Message-ID"])
        assert received.get_content_type() == "multipart/alternative"
        plain, html = parts(received)
        assert "meshgram" in plain, kind
        assert html.lstrip().startswith("<!DOCTYPE html>"), kind
    assert len(ids) == len(MailKind), "every mail gets its own Message-ID"


def test_verify_email_links_to_the_page_with_the_token_in_the_fragment(
    renderer: MailRenderer,
) -> None:
    message = render_each(renderer)[MailKind.VERIFY_EMAIL]
    plain, html = parts(message)
    link = f"{PUBLIC_URL}/account/verify-email#token={TOKEN}"
    assert link in plain
    assert f'href="{link}"' in html
    assert "expires in 24 hours" in plain
    assert "expires in 24 hours" in html


def test_reset_password_has_its_link_a_30_minute_lifetime_and_says_to_ignore_it(
    renderer: MailRenderer,
) -> None:
    plain, html = parts(render_each(renderer)[MailKind.RESET_PASSWORD])
    link = f"{PUBLIC_URL}/account/reset-password#token={TOKEN}"
    assert link in plain
    assert f'href="{link}"' in html
    for part in (plain, html):
        assert "30 minutes" in part
        assert "If it wasn't you, ignore this mail" in part.replace("&#39;", "'")


def test_password_changed_says_when_and_what_to_do_if_it_was_not_you(
    renderer: MailRenderer,
) -> None:
    plain, html = parts(render_each(renderer)[MailKind.PASSWORD_CHANGED])
    for part in (plain, html):
        assert "2026-03-04 05:06 UTC" in part
        assert f"{PUBLIC_URL}/account/reset-password" in part
    assert "If it wasn't you" in plain


def test_password_changed_shows_the_time_in_utc(renderer: MailRenderer) -> None:
    plus_two = timezone(timedelta(hours=2))
    message = renderer.render(
        "password_changed", to=TO, changed_at=datetime(2026, 3, 4, 7, 6, tzinfo=plus_two)
    )
    assert "2026-03-04 05:06 UTC" in parts(message)[0]


def test_signup_attempt_links_to_login_and_to_reset(renderer: MailRenderer) -> None:
    plain, html = parts(render_each(renderer)[MailKind.SIGNUP_ATTEMPT])
    assert f"\n{PUBLIC_URL}/\n" in plain
    assert f'href="{PUBLIC_URL}/"' in html
    assert f"{PUBLIC_URL}/account/reset-password" in plain
    assert f'href="{PUBLIC_URL}/account/reset-password"' in html
    assert "#token=" not in plain + html


def test_a_trailing_slash_of_the_public_url_does_not_double(renderer: MailRenderer) -> None:
    slashed = MailRenderer(public_url=f"{PUBLIC_URL}/", sender=FROM)
    message = slashed.render("verify_email", to=TO, token=TOKEN, lifetime=timedelta(hours=1))
    assert f"{PUBLIC_URL}/account/verify-email#token={TOKEN}" in parts(message)[0]


def test_the_html_part_escapes_what_it_shows() -> None:
    hostile = MailRenderer(public_url='https://x.test/"><script>alert(1)</script>', sender=FROM)
    message = hostile.render("signup_attempt", to=TO)
    _, html = parts(message)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert '"><' not in html


def test_a_token_is_percent_encoded_in_the_link(renderer: MailRenderer) -> None:
    message = renderer.render(
        "reset_password", to=TO, token='a b&c<d>"e', lifetime=timedelta(minutes=30)
    )
    plain, html = parts(message)
    link = f"{PUBLIC_URL}/account/reset-password#token=a%20b%26c%3Cd%3E%22e"
    assert link in plain
    assert f'href="{link}"' in html


@pytest.mark.parametrize(
    "to",
    [
        "ada@example.org\r\nBcc: eve@example.net",
        "ada@example.org\nBcc: eve@example.net",
        "ada@example.org\rX-Evil: 1",
        "ada@example.org, eve@example.net",
        "not an address",
        "",
    ],
)
def test_a_recipient_that_is_not_one_address_is_refused(renderer: MailRenderer, to: str) -> None:
    with pytest.raises(ValueError, match="recipient"):
        renderer.render("signup_attempt", to=to)


def test_line_breaks_in_values_never_become_headers(renderer: MailRenderer) -> None:
    message = renderer.render(
        "verify_email",
        to=TO,
        token="x\r\nBcc: eve@example.net\r\n\r\nforged body",
        lifetime=timedelta(hours=1),
    )
    received = reparsed(message)
    assert received["Bcc"] is None
    assert sorted(received.keys()) == sorted(
        [
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "Auto-Submitted",
            "MIME-Version",
            "Content-Type",
        ]
    )
    assert "token=x%0D%0ABcc%3A%20eve%40example.net" in parts(received)[0]


def test_a_from_address_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="From"):
        MailRenderer(public_url=PUBLIC_URL, sender="a@example.test\r\nBcc: eve@example.net")


def test_an_internationalised_address_is_accepted(renderer: MailRenderer) -> None:
    message = renderer.render("signup_attempt", to="zoë@exämple.org")
    assert message["To"] == "zoë@exämple.org"


def test_mfa_mails_say_when_and_what_to_do_if_it_was_not_you(renderer: MailRenderer) -> None:
    mails = render_each(renderer)
    for kind, said in ((MailKind.MFA_ENABLED, "turned on"), (MailKind.MFA_DISABLED, "turned off")):
        plain, html = parts(mails[kind])
        for part in (plain, html):
            assert said in part, kind
            assert "2026-03-04 05:06 UTC" in part, kind
            assert f"{PUBLIC_URL}/account/reset-password" in part, kind
            assert "#token=" not in part, kind
        assert "If it wasn't you" in plain, kind
    words = " ".join(parts(mails[MailKind.MFA_DISABLED])[0].split())
    assert "your recovery codes no longer work" in words


def test_new_device_mail_names_the_device_and_the_time(renderer: MailRenderer) -> None:
    plain, html = parts(render_each(renderer)[MailKind.NEW_DEVICE_LOGIN])
    for part in (plain, html):
        assert DEVICE in part
        assert "2026-03-04 05:06 UTC" in part
        assert f"{PUBLIC_URL}/account/reset-password" in part


def device_line(renderer: MailRenderer, device: str) -> tuple[str, str]:
    """The line of the plain part that names the device, and the HTML part."""
    message = renderer.render("new_device_login", to=TO, changed_at=CHANGED_AT, device=device)
    plain, html = parts(reparsed(message))
    lines = plain.splitlines()
    # The device is the indented line after the one that ends with the time.
    [index] = [i for i, line in enumerate(lines) if line.endswith("UTC:")]
    assert lines[index + 1] == ""
    return lines[index + 2], html


def test_the_device_a_client_claims_is_one_short_line(renderer: MailRenderer) -> None:
    claimed = "Evil/1.0\r\nBcc: eve@example.net\n\nforged body\u2028more\t" + "x" * 1000
    line, _ = device_line(renderer, claimed)
    assert line.startswith("  Evil/1.0 Bcc: eve@example.net forged body more x")
    assert len(line.strip()) == DEVICE_MAX
    assert (
        reparsed(renderer.render("new_device_login", to=TO, changed_at=CHANGED_AT, device=claimed))[
            "Bcc"
        ]
        is None
    )


def test_an_empty_device_reads_as_unknown(renderer: MailRenderer) -> None:
    line, _ = device_line(renderer, " \t ")
    assert line.strip() == "an unknown device"


def test_the_html_part_escapes_the_device(renderer: MailRenderer) -> None:
    line, html = device_line(renderer, '<img src=x onerror="alert(1)"> & <script>')
    assert line.strip() == '<img src=x onerror="alert(1)"> & <script>'
    assert "<img" not in html
    assert "<script>" not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt; &amp; &lt;script&gt;" in html


@pytest.mark.parametrize(
    ("kind", "values", "problem"),
    [
        ("verify_email", {"token": TOKEN}, "takes values"),
        ("verify_email", {"token": TOKEN, "lifetime": timedelta(hours=1), "x": 1}, "takes values"),
        ("verify_email", {"token": TOKEN, "lifetime": 3600}, "must be a timedelta"),
        ("verify_email", {"token": "", "lifetime": timedelta(hours=1)}, "must not be empty"),
        ("reset_password", {"token": TOKEN, "lifetime": timedelta(0)}, "must be positive"),
        ("password_changed", {"changed_at": datetime(2026, 3, 4)}, "timezone-aware"),
        ("mfa_enabled", {}, "takes values"),
        ("new_device_login", {"changed_at": CHANGED_AT}, "takes values"),
        ("new_device_login", {"changed_at": CHANGED_AT, "device": 7}, "must be a str"),
        ("signup_attempt", {"token": TOKEN}, "takes values"),
        ("no_such_kind", {}, "not a valid MailKind"),
    ],
)
def test_wrong_values_are_refused(
    renderer: MailRenderer, kind: str, values: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        renderer.render(kind, to=TO, **values)


@pytest.mark.parametrize(
    ("duration", "said"),
    [
        (timedelta(minutes=30), "30 minutes"),
        (timedelta(minutes=1), "1 minute"),
        (timedelta(hours=1), "1 hour"),
        (timedelta(hours=24), "24 hours"),
        (timedelta(hours=36), "36 hours"),
        (timedelta(days=7), "7 days"),
        (timedelta(seconds=90), "90 seconds"),
    ],
)
def test_lifetimes_are_said_in_whole_units(duration: timedelta, said: str) -> None:
    assert describe_duration(duration) == said
