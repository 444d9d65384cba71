"""The account flows' side of mail (auth_svc.accounts.Mailer): each kind rendered with what it
needs (the link lifetimes from the settings, the time of a password change), sealed for the
outbox; and a nudge to the sender once the write that queued it has committed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from auth_svc.accounts import MailKind, SealedMail
from auth_svc.mail.messages import MailRenderer
from auth_svc.mail.sealing import MailSealer


def _utc_now() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


class AccountMailer:
    """Composes the mails of the account flows; implements auth_svc.accounts.Mailer."""

    def __init__(
        self,
        renderer: MailRenderer,
        sealer: MailSealer,
        wake_sender: Callable[[], None],
        *,
        verify_lifetime: timedelta,
        reset_lifetime: timedelta,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._renderer = renderer
        self._sealer = sealer
        self._wake_sender = wake_sender
        self._verify_lifetime = verify_lifetime
        self._reset_lifetime = reset_lifetime
        self._clock = clock

    def compose(
        self, kind: MailKind, to: str, *, token: str = "", device: str = "", new_email: str = ""
    ) -> SealedMail:
        """Return the sealed mail of that kind for the address; token goes into its link (the
        verify, reset and email-change mails need one, the others take none), device names the
        client of a new-device mail, new_email the address an email change moves to. ValueError
        when to is not one address or the token does not fit."""
        values: dict[str, object]
        match kind:
            case MailKind.VERIFY_EMAIL:
                values = {"token": token, "lifetime": self._verify_lifetime}
            case MailKind.RESET_PASSWORD:
                values = {"token": token, "lifetime": self._reset_lifetime}
            case MailKind.PASSWORD_CHANGED:
                values = {"changed_at": self._clock()}
            case MailKind.SIGNUP_ATTEMPT:
                values = {}
            case MailKind.MFA_ENABLED | MailKind.MFA_DISABLED:
                values = {"changed_at": self._clock()}
            case MailKind.NEW_DEVICE_LOGIN:
                values = {"changed_at": self._clock(), "device": device}
            case MailKind.CONFIRM_EMAIL_CHANGE:
                values = {"token": token, "lifetime": self._verify_lifetime}
            case MailKind.EMAIL_CHANGE_REQUESTED:
                values = {"changed_at": self._clock(), "new_email": new_email}
            case MailKind.EMAIL_CHANGED:
                values = {"changed_at": self._clock()}
        if token and "token" not in values:
            raise ValueError(f"{kind.value} mail carries no token")
        return self._sealer.seal(self._renderer.render(kind, to=to, **values), kind.value)

    def queued(self) -> None:
        """Tell the sender a mail was just queued, so it goes out without waiting for a poll."""
        self._wake_sender()
