"""Helpers of the end-to-end tests of account defences (tests/e2e/test_account_defences.py):
clients that connect from a chosen loopback address, an authenticator app, and readers of the
JSON errors' details (ErrorInfo metadata, RetryInfo)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pyotp
from google.rpc import error_details_pb2, status_pb2

from tests.e2e.support import mails_to
from tools.mailbox import StoredMail
from tools.mesh import Mesh

# RFC 6238 as authenticator apps use it (and as auth_svc checks it).
TOTP_STEP_SECONDS = 30
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@contextmanager
def client_from(
    edge_url: str, address: str, user_agent: str | None = None
) -> Iterator[httpx.Client]:
    """An HTTP client to the edge whose connections come from a loopback address of this
    machine (127.0.0.0/8), so that the edge sees that address as the client's."""
    headers = {"user-agent": user_agent} if user_agent else None
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(
        base_url=edge_url, timeout=30, transport=transport, headers=headers
    ) as client:
        yield client


def login(
    http: httpx.Client, email: str, password: str, captcha_token: str | None = None
) -> httpx.Response:
    """POST /v1/auth:login, with a CAPTCHA token when given."""
    body = {"email": email, "password": password}
    if captcha_token is not None:
        body["captchaToken"] = captcha_token
    return http.post("/v1/auth:login", json=body)


def verify_mfa(
    http: httpx.Client, challenge: str, code: str = "", recovery_code: str = ""
) -> httpx.Response:
    """POST /v1/auth:verifyMfa with a TOTP code or a recovery code (or both)."""
    body = {"challenge": challenge}
    if code:
        body["code"] = code
    if recovery_code:
        body["recoveryCode"] = recovery_code
    return http.post("/v1/auth:verifyMfa", json=body)


def challenge_of(reply: httpx.Response) -> str:
    """The MFA challenge of a login whose password was right: it carries no tokens."""
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert "tokens" not in body, body
    assert 0 < body["mfaChallenge"]["expiresIn"] <= 3600
    return str(body["mfaChallenge"]["challenge"])


def details_of(reply: httpx.Response, kind: str) -> dict[str, Any]:
    """The one detail of a JSON error whose @type ends with kind (e.g. "google.rpc.RetryInfo")."""
    found = [d for d in reply.json().get("details", []) if d.get("@type", "").endswith(kind)]
    assert len(found) == 1, reply.text
    return dict(found[0])


def error_metadata(reply: httpx.Response) -> dict[str, str]:
    """The ErrorInfo metadata of a JSON error."""
    return dict(details_of(reply, "google.rpc.ErrorInfo").get("metadata", {}))


def retry_delay_seconds(reply: httpx.Response) -> float:
    """The RetryInfo delay of a JSON error, in seconds ("2s" -> 2.0)."""
    delay = str(details_of(reply, "google.rpc.RetryInfo")["retryDelay"])
    assert delay.endswith("s"), delay
    return float(delay[:-1])


def grpc_status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a failed native gRPC call carries in its trailers."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no {STATUS_DETAILS_KEY} in {error!r}")


def grpc_retry_delay_seconds(error: grpc.aio.AioRpcError) -> int:
    """The RetryInfo delay of a failed native gRPC call, in whole seconds."""
    for detail in grpc_status_of(error).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return int(retry.retry_delay.seconds)
    raise AssertionError(f"no RetryInfo in {error!r}")


def is_png(encoded: str) -> bool:
    """Whether a JSON bytes field (standard base64) holds a PNG file."""
    return base64.b64decode(encoded).startswith(PNG_SIGNATURE)


@dataclass
class AuthenticatorApp:
    """What a user's authenticator app does with the secret it was given: show the code of a
    time step. It remembers the last step whose code was accepted, since a server takes a code
    only for a later step than the last one used (within one step either side of now)."""

    secret: str
    last_step: int | None = None

    def code_at(self, step: int) -> str:
        """The code the app shows during step."""
        return pyotp.TOTP(self.secret).at(step * TOTP_STEP_SECONDS)

    def fresh(self) -> str:
        """A code the server has not seen yet, of now or the next step (waiting for the clock
        when both are used); recorded as used, so send it where it is expected to pass."""
        step = now_step()
        if self.last_step is not None and self.last_step >= step + 1:
            # Both acceptable steps are used: wait until the next one is within reach.
            while now_step() + 1 <= self.last_step:
                time.sleep(0.2)
            step = now_step()
        chosen = step if self.last_step is None else max(step, self.last_step + 1)
        self.last_step = chosen
        return self.code_at(chosen)

    def replayed(self) -> str:
        """The code that was accepted last."""
        assert self.last_step is not None
        return self.code_at(self.last_step)

    def older(self) -> str:
        """The code of the step before the last accepted one."""
        assert self.last_step is not None
        return self.code_at(self.last_step - 1)

    def wrong(self) -> str:
        """Six digits that are the code of no step near now."""
        here = now_step()
        near = {self.code_at(step) for step in range(here - 3, here + 4)}
        return next(f"{n:06d}" for n in range(123456, 10**6) if f"{n:06d}" not in near)


def now_step() -> int:
    """The TOTP time step of now."""
    return int(time.time() // TOTP_STEP_SECONDS)


def mails_with_subject(
    mesh: Mesh, address: str, subject: str, count: int = 1, seconds: float = 15.0
) -> list[StoredMail]:
    """The mails to address with that subject, once there are count of them or seconds have
    passed (whichever comes first: check the length)."""
    return mails_to(mesh, address, count, seconds, subject=subject)
