"""When a failed mail is tried again, and which SMTP failures are worth trying again at all."""

from __future__ import annotations

from datetime import timedelta

import aiosmtplib
import pytest

from auth_svc.mail.sender import RetryPolicy
from auth_svc.mail.smtp import classify


def test_waits_double_from_five_seconds_up_to_an_hour() -> None:
    policy = RetryPolicy()
    waits = [policy.delay(failures, draw=0.0) for failures in range(1, 13)]
    assert waits[:4] == [timedelta(seconds=s) for s in (5, 10, 20, 40)]
    assert waits[-1] == timedelta(hours=1)
    assert max(waits) == timedelta(hours=1)
    assert waits == sorted(waits)


def test_jitter_only_shortens_a_wait_by_up_to_a_quarter() -> None:
    policy = RetryPolicy()
    assert policy.delay(3, draw=0.999) > timedelta(seconds=15)
    assert policy.delay(3, draw=0.5) == timedelta(seconds=17.5)
    assert policy.delay(100, draw=0.0) == timedelta(hours=1)


def refused(code: int) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(code, "<ada@example.org> no", "ada@example.org")]
    )


@pytest.mark.parametrize(
    ("error", "permanent", "server_fault"),
    [
        (refused(550), True, False),
        (refused(450), False, False),
        (aiosmtplib.SMTPDataError(554, "content rejected"), True, False),
        (aiosmtplib.SMTPDataError(451, "try later"), False, False),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), False, True),
        (aiosmtplib.SMTPSenderRefused(550, "no", "m@localhost"), False, True),
        (aiosmtplib.SMTPConnectError("refused"), False, True),
        (aiosmtplib.SMTPServerDisconnected("gone"), False, True),
        (aiosmtplib.SMTPReadTimeoutError("slow"), False, True),
        (aiosmtplib.SMTPResponseException(421, "closing"), False, True),
        (aiosmtplib.SMTPNotSupported("no SMTPUTF8"), False, False),
        (ConnectionRefusedError(), False, True),
        (TimeoutError(), False, True),
    ],
)
def test_only_a_5xx_refusal_of_recipient_or_message_is_permanent(
    error: Exception, permanent: bool, server_fault: bool
) -> None:
    failure = classify(error)
    assert (failure.permanent, failure.server_fault) == (permanent, server_fault)


def test_a_failure_reason_never_quotes_the_server() -> None:
    failure = classify(refused(550))
    assert failure.reason == "SMTP 550: recipient refused"
    assert "ada@" not in failure.reason
