"""What MFA adds to a login: one client logging in over REST without MFA and with it (password,
then a TOTP code to VerifyMfa), in turn, in one run.

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


@dataclass
class PairedRuns:
    """Logins without and with MFA taken in turn, and the second steps of the MFA ones."""

    plain: h2load.Run
    mfa: h2load.Run
    second_step: h2load.Run


def _post(client: httpx.Client, path: str, body: dict[str, str]) -> tuple[float, httpx.Response]:
    """POST body to path: how long it took in milliseconds, and the answer."""
    begin = time.perf_counter()
    reply = client.post(path, json=body)
    return 1000 * (time.perf_counter() - begin), reply


def paired_logins(
    client: httpx.Client, email: str, password: str, pool: list[MfaAccount], seconds: float
) -> PairedRuns:
    """For `seconds`, a login without MFA and one with it (password, then VerifyMfa with the
    app's code) in turn, so that the machine's drift and bcrypt's spread hit both alike; each
    MFA account logs in at most once per time step."""
    plain: list[float] = []
    whole: list[float] = []
    second: list[float] = []
    statuses: list[int] = []
    end = time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < end:
        account = next((a for a in pool if a.last_step < _step()), None)
        if account is None:
            time.sleep(0.05)  # the whole pool logged in this step: wait for the next
            continue
        spent, reply = _post(client, "/v1/auth:login", {"email": email, "password": password})
        plain.append(spent)
        statuses.append(reply.status_code)
        first, login = _post(
            client, "/v1/auth:login", {"email": account.email, "password": account.password}
        )
        challenge = login.json().get("mfaChallenge", {}).get("challenge", "")
        account.last_step = _step()
        last, verify = _post(
            client, "/v1/auth:verifyMfa", {"challenge": challenge, "code": account.totp.now()}
        )
        whole.append(first + last)
        second.append(last)
        statuses.append(verify.status_code if login.status_code == 200 else login.status_code)
    elapsed = time.monotonic() - started
    return PairedRuns(
        plain=h2load.Run(elapsed, statuses[::2], plain),
        mfa=h2load.Run(elapsed, statuses[1::2], whole),
        second_step=h2load.Run(elapsed, statuses[1::2], second),
    )


def edge_round_trips(client: httpx.Client, count: int = 40) -> h2load.Run:
    """One client asking the edge for the JWKS again and again: what one more request through
    the edge to auth_svc costs, without any store (the floor of a login's second step)."""
    latencies, statuses = [], []
    started = time.monotonic()
    for _ in range(count):
        begin = time.perf_counter()
        reply = client.get("/.well-known/jwks.json")
        latencies.append(1000 * (time.perf_counter() - begin))
        statuses.append(reply.status_code)
    return h2load.Run(time.monotonic() - started, statuses, latencies)
