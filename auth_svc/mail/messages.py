"""The mails auth_svc sends, rendered from Jinja2 templates into a plain-text and an HTML part.

Links carry single-use tokens in the URL fragment (#token=...): browsers never send a fragment
to a server, so tokens stay out of every access log on the way.
"""

from __future__ import annotations

import email.policy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from auth_svc.accounts import MailKind

PRODUCT = "meshgram"
TEMPLATES = Path(__file__).parent / "templates"
VERIFY_EMAIL_PATH = "/account/verify-email"
RESET_PASSWORD_PATH = "/account/reset-password"
# Signing in happens in the app itself, at the root of the public URL.
LOGIN_PATH = "/"
# How much of a client's self-description (User-Agent and address) a mail repeats.
DEVICE_MAX = 200


SUBJECTS: Mapping[MailKind, str] = {
    MailKind.VERIFY_EMAIL: f"Confirm your email address for {PRODUCT}",
    MailKind.RESET_PASSWORD: f"Reset your {PRODUCT} password",
    MailKind.PASSWORD_CHANGED: f"Your {PRODUCT} password was changed",
    MailKind.SIGNUP_ATTEMPT: f"Someone tried to sign up to {PRODUCT} with your address",
    MailKind.MFA_ENABLED: f"Two-step login is on for your {PRODUCT} account",
    MailKind.MFA_DISABLED: f"Two-step login was turned off for your {PRODUCT} account",
    MailKind.NEW_DEVICE_LOGIN: f"New sign-in to your {PRODUCT} account",
    MailKind.CONFIRM_EMAIL_CHANGE: f"Confirm your new email address for {PRODUCT}",
    MailKind.EMAIL_CHANGE_REQUESTED: f"A change of your {PRODUCT} email address was requested",
    MailKind.EMAIL_CHANGED: f"The email address of your {PRODUCT} account was changed",
}

# The values each kind needs, with their types; render() refuses missing, extra or mistyped ones
# so that a mail never goes out with a hole in it.
VALUES: Mapping[MailKind, Mapping[str, type]] = {
    MailKind.VERIFY_EMAIL: {"token": str, "lifetime": timedelta},
    MailKind.RESET_PASSWORD: {"token": str, "lifetime": timedelta},
    MailKind.PASSWORD_CHANGED: {"changed_at": datetime},
    MailKind.SIGNUP_ATTEMPT: {},
    MailKind.MFA_ENABLED: {"changed_at": datetime},
    MailKind.MFA_DISABLED: {"changed_at": datetime},
    MailKind.NEW_DEVICE_LOGIN: {"changed_at": datetime, "device": str},
    MailKind.CONFIRM_EMAIL_CHANGE: {"token": str, "lifetime": timedelta},
    MailKind.EMAIL_CHANGE_REQUESTED: {"changed_at": datetime, "new_email": str},
    MailKind.EMAIL_CHANGED: {"changed_at": datetime},
}


def describe_duration(duration: timedelta) -> str:
    """Say a positive duration in the largest whole unit, days from two on: "30 minutes",
    "24 hours", "7 days", "90 seconds"."""
    seconds = int(duration.total_seconds())
    if seconds <= 0:
        raise ValueError("a lifetime must be positive")
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0 and (unit != "day" or seconds >= 2 * size):
            count = seconds // size
            return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
    raise AssertionError("unreachable: every whole number of seconds is a count of seconds")


def _single_address(value: str, what: str) -> Address:
    """Parse value as exactly one mail address (a display name allowed); ValueError otherwise,
    in particular for line breaks, which could otherwise start a header of their own."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} must not contain line breaks")
    header = email.policy.default.header_factory("To", value)
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    # A non-ASCII local part is valid mail (SMTPUTF8), and addresses may have one.
    defects = [d for d in header.defects if not isinstance(d, NonASCIILocalPartDefect)]
    if defects or len(addresses) != 1:
        raise ValueError(f"{what} must be exactly one mail address")
    address = addresses[0]
    if not address.username or not address.domain:
        raise ValueError(f"{what} must be exactly one mail address")
    return address


class MailRenderer:
    """Renders mails of every kind with the From address and the public URL of the pages."""

    def __init__(self, *, public_url: str, sender: str) -> None:
        self._public_url = public_url.rstrip("/")
        self._sender = _single_address(sender, "the From address")
        self._templates = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def link(self, path: str, token: str | None = None) -> str:
        """The public URL of a page, with a token in its fragment when given."""
        url = f"{self._public_url}{path}"
        return url if token is None else f"{url}#token={quote(token, safe='')}"

    def render(self, kind: MailKind | str, *, to: str, **values: object) -> EmailMessage:
        """Render a mail of kind (a MailKind or its value) for the address `to` with the kind's
        values (see VALUES); ValueError for an unknown kind, a `to` that is not one address, or
        wrong values."""
        kind = MailKind(kind)
        recipient = _single_address(to, "the recipient")
        context = {
            "product": PRODUCT,
            "login_url": self.link(LOGIN_PATH),
            "reset_request_url": self.link(RESET_PASSWORD_PATH),
            **self._context(kind, values),
        }
        message = EmailMessage(policy=email.policy.SMTP)
        message["From"] = self._sender
        message["To"] = recipient
        message["Subject"] = SUBJECTS[kind]
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain=self._sender.domain or "localhost")
        # RFC 3834: automatic mail; well-behaved servers send no vacation replies to it.
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(self._templates.get_template(f"{kind.value}.txt").render(context))
        html = self._templates.get_template(f"{kind.value}.html").render(context)
        message.add_alternative(html, subtype="html")
        return message

    def _context(self, kind: MailKind, values: Mapping[str, object]) -> dict[str, object]:
        """Check values against the kind's expected names and types; return the template
        context they make (links built from tokens, durations and times spelled out)."""
        expected = VALUES[kind]
        if set(values) != set(expected):
            raise ValueError(
                f"{kind.value} mail takes values {sorted(expected)}, got {sorted(values)}"
            )
        for name, value in values.items():
            if not isinstance(value, expected[name]):
                raise ValueError(f"{kind.value} mail: {name} must be a {expected[name].__name__}")
        context: dict[str, object] = {}
        token = values.get("token")
        if isinstance(token, str):
            if not token:
                raise ValueError(f"{kind.value} mail: token must not be empty")
            # An email change is confirmed on the verification page, as it verifies the address.
            verifies = kind in (MailKind.VERIFY_EMAIL, MailKind.CONFIRM_EMAIL_CHANGE)
            path = VERIFY_EMAIL_PATH if verifies else RESET_PASSWORD_PATH
            context["token_url"] = self.link(path, token)
        lifetime = values.get("lifetime")
        if isinstance(lifetime, timedelta):
            context["lifetime"] = describe_duration(lifetime)
        new_email = values.get("new_email")
        if isinstance(new_email, str):
            context["new_email"] = str(_single_address(new_email, "the new address"))
        device = values.get("device")
        if isinstance(device, str):
            # Whatever the client claimed to be, on one short line.
            context["device"] = " ".join(device.split())[:DEVICE_MAX] or "an unknown device"
        changed_at = values.get("changed_at")
        if isinstance(changed_at, datetime):
            if changed_at.tzinfo is None:
                raise ValueError(f"{kind.value} mail: changed_at must be timezone-aware")
            context["changed_at"] = changed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return context
