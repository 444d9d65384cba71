"""What MFA adds to a login: one client logging in again and again over REST, without MFA and
with it (password, then a TOTP code to VerifyMfa), measured the same way in one run.

A TOTP code works once per account and time step (no replay), so the MFA load cycles through a
pool of accounts that each have MFA on, using each at most once per 30-second step.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx
import pyotp

from bench import h2load

# The RFC 6238 step the service uses; an account logs in at most once per step here.
STEP_SECONDS = 30


@dataclass
class MfaAccount:
    """An account with MFA on, and the step its last code was of."""

    email: str
    password: str
    totp: pyotp.TOTP
    last_step: int = -1


def _step() -> int:
    """The current TOTP time step."""
    return int(time.time() // STEP_SECONDS)


def enrol(client: httpx.Client, count: int) -> list[MfaAccount]:
    """Sign up count accounts and turn MFA on for each (enrol, confirm with a first code)."""
    accounts = []
    for _ in range(count):
        tag = uuid.uuid4().hex[:12]
        email, password = f"bench-mfa-{tag}@example.com", f"bench password {tag}"
        client.post(
            "/v1/auth:register",
            json={"email": email, "username": f"bench_mfa_{tag}", "password": password},
        ).raise_for_status()
        login = client.post("/v1/auth:login", json={"email": email, "password": password})
        login.raise_for_status()
        bearer = {"authorization": f"Bearer {login.json()['tokens']['accessToken']}"}
        started = client.post("/v1/auth/mfa:startEnrollment", json={}, headers=bearer)
        started.raise_for_status()
        totp = pyotp.TOTP(started.json()["secret"])
        client.post(
            "/v1/auth/mfa:confirmEnrollment", json={"code": totp.now()}, headers=bearer
        ).raise_for_status()
        accounts.append(MfaAccount(email, password, totp, _step()))
    return accounts


def plain_logins(client: httpx.Client, email: str, password: str, seconds: float) -> h2load.Run:
    """Log in one after another for `seconds`; every request's latency."""
    body = {"email": email, "password": password}
    latencies, statuses = [], []
    end = time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < end:
        begin = time.perf_counter()
        reply = client.post("/v1/auth:login", json=body)
        latencies.append(1000 * (time.perf_counter() - begin))
        statuses.append(reply.status_code)
    return h2load.Run(time.monotonic() - started, statuses, latencies)


@dataclass
class MfaRuns:
    """Latencies of whole MFA logins (both calls) and of their second call alone."""

    whole: h2load.Run
    second_step: h2load.Run


def mfa_logins(client: httpx.Client, pool: list[MfaAccount], seconds: float) -> MfaRuns:
    """Log in with password and code one after another for `seconds`, each account at most
    once per time step; the latencies of whole logins and of their VerifyMfa calls."""
    whole, second, statuses = [], [], []
    end = time.monotonic() + seconds
    started = time.monotonic()
    index = 0
    while time.monotonic() < end:
        account = pool[index % len(pool)]
        index += 1
        if account.last_step >= _step():
            if index % len(pool) == 0:
                time.sleep(0.05)  # the whole pool used this step: wait for the next
            continue
        begin = time.perf_counter()
        login = client.post(
            "/v1/auth:login", json={"email": account.email, "password": account.password}
        )
        challenge = login.json().get("mfaChallenge", {}).get("challenge", "")
        middle = time.perf_counter()
        account.last_step = _step()
        verify = client.post(
            "/v1/auth:verifyMfa", json={"challenge": challenge, "code": account.totp.now()}
        )
        done = time.perf_counter()
        whole.append(1000 * (done - begin))
        second.append(1000 * (done - middle))
        statuses.append(login.status_code if login.status_code != 200 else verify.status_code)
    elapsed = time.monotonic() - started
    return MfaRuns(
        h2load.Run(elapsed, statuses, whole), h2load.Run(elapsed, list(statuses), second)
    )
