"""Signing-key rotation under load: two auth_svc replicas share a key folder, clients keep
logging in and using their tokens at a user_svc and at a verifier of their own, and
`python -m auth_svc.keys rotate` runs meanwhile. No request may fail."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import jwt
import pytest
from pydantic import SecretStr

from auth_svc.keyring import read_keys
from auth_svc.server import build_definition as build_auth
from auth_svc.settings import AuthSettings
from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshgram.user.v1 import user_pb2, user_pb2_grpc
from meshkit.access_tokens import AccessTokenVerifier
from meshkit.clients import PeerCaller
from meshkit.jwks import auth_jwks_fetcher
from tests.helpers import service_settings, serving
from user_svc.server import build_definition as build_user
from user_svc.settings import UserSettings

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    # The async stub types exist only for type checkers (the stubs on an aio channel).
    from meshgram.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub as AuthStub
    from meshgram.user.v1.user_pb2_grpc import UserServiceAsyncStub as UserStub

ROOT = Path(__file__).resolve().parents[3]
# Short, so that the test sees a whole rotation; the verifier of the test's own refreshes its
# keys more often than the publish delay, as every verifier does with the real settings.
PUBLISH_DELAY_SECONDS = 3
RELOAD_SECONDS = 0.2
VERIFIER_REFRESH_SECONDS = 1.0
CLIENTS = 6


@dataclass
class Load:
    """What the clients did: every token issued, every failure, the JWKS the verifier saw."""

    tokens: list[str] = field(default_factory=list)
    verified: int = 0
    failures: list[str] = field(default_factory=list)
    kid_first_fetched_at: dict[str, float] = field(default_factory=dict)
    """Wall-clock time at which the test's verifier first fetched a JWKS holding each kid."""
    new_kid: str = ""
    new_kid_issued: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once a token of the new key has been issued and used."""


@dataclass(frozen=True)
class Mesh:
    """Two auth_svc replicas on one key folder, and a user_svc verifying against the first."""

    settings: AuthSettings
    auth: list[AuthStub]
    auth_channels: list[grpc.aio.Channel]
    users: UserStub


@pytest.fixture
async def mesh(data_access_address: str, mesh_secret: str, tmp_path: Path) -> AsyncIterator[Mesh]:
    """Two auth_svc replicas sharing tmp_path/jwt, and a user_svc that trusts the first."""
    settings = service_settings(
        AuthSettings,
        mesh_secret,
        data_access_address,
        MESHGRAM_ENV="development",  # the first key is generated
        password_pepper=SecretStr(secrets.token_urlsafe(32)),
        bcrypt_rounds=4,
        jwt_keys_dir=tmp_path / "jwt",
        jwt_private_key_file=tmp_path / "absent.pem",
        jwt_key_publish_delay_seconds=PUBLISH_DELAY_SECONDS,
        jwt_keys_reload_seconds=RELOAD_SECONDS,
        # The session's own auth_svc delivers the session's mail (to its test mailbox); these
        # replicas must not take the sending lease from it.
        mail_sending=False,
    )
    async with (
        serving(build_auth(settings)) as first,
        serving(build_auth(settings)) as second,
        grpc.aio.insecure_channel(first) as first_channel,
        grpc.aio.insecure_channel(second) as second_channel,
    ):
        user_settings = service_settings(
            UserSettings, mesh_secret, data_access_address, auth_addr=first
        )
        async with (
            serving(build_user(user_settings)) as user_address,
            grpc.aio.insecure_channel(user_address) as user_channel,
        ):
            yield Mesh(
                settings=settings,
                auth=[
                    auth_pb2_grpc.AuthServiceStub(first_channel),
                    auth_pb2_grpc.AuthServiceStub(second_channel),
                ],
                auth_channels=[first_channel, second_channel],
                users=user_pb2_grpc.UserServiceStub(user_channel),
            )


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def issued_at(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["iat"])


async def register(stub: AuthStub) -> tuple[str, str]:
    """Register a fresh account; return its email and password."""
    tag = uuid.uuid4().hex[:12]
    email, password = f"rotation.{tag}@example.com", f"password-{tag}-long"
    await stub.Register(
        auth_pb2.RegisterRequest(email=email, username=f"rot_{tag}", password=password)
    )
    return email, password


async def run_rotate_command(settings: AuthSettings) -> str:
    """Run `python -m auth_svc.keys rotate` as an operator would, on the replicas' folder."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AUTH_")}
    env.update(
        PYTHONPATH=str(ROOT),
        AUTH_JWT_KEYS_DIR=str(settings.jwt_keys_dir),
        AUTH_JWT_PRIVATE_KEY_FILE=str(settings.jwt_private_key_file),
        AUTH_JWT_KEY_PUBLISH_DELAY_SECONDS=str(PUBLISH_DELAY_SECONDS),
        AUTH_JWT_KEYS_RELOAD_SECONDS=str(RELOAD_SECONDS),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auth_svc.keys",
        "rotate",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(60):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_rotation_under_load_fails_no_request(mesh: Mesh) -> None:
    load = Load()
    fetch = auth_jwks_fetcher(mesh.auth_channels[1], PeerCaller(timeout=5))

    async def watched_fetch() -> Iterable[Mapping[str, str]]:
        keys = list(await fetch())
        for key in keys:
            load.kid_first_fetched_at.setdefault(key["kid"], time.time())
        return keys

    verifier = AccessTokenVerifier(watched_fetch, refresh_seconds=VERIFIER_REFRESH_SECONDS)
    accounts = [await register(mesh.auth[i % 2]) for i in range(CLIENTS)]
    old_login = await mesh.auth[0].Login(
        auth_pb2.LoginRequest(email=accounts[0][0], password=accounts[0][1])
    )
    old_token = old_login.tokens.access_token
    old_kid = kid_of(old_token)
    stop = asyncio.Event()

    async def use(token: str) -> None:
        """Use a token at user_svc and at the test's verifier; record any failure."""
        try:
            await mesh.users.GetMyProfile(
                user_pb2.GetMyProfileRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=10,
            )
            await verifier.verify(token)
            load.verified += 1
        except Exception as exc:  # every kind of failure counts, and is shown
            load.failures.append(f"{kid_of(token)}: {exc!r}")

    async def client(number: int) -> None:
        """Log in over and over, alternating replicas, and use each fresh token, plus the token
        issued before the rotation."""
        email, password = accounts[number]
        while not stop.is_set():
            try:
                login = await mesh.auth[number % 2].Login(
                    auth_pb2.LoginRequest(email=email, password=password), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                load.failures.append(f"login: {exc!r}")
                continue
            load.tokens.append(login.tokens.access_token)
            await use(login.tokens.access_token)
            await use(old_token)
            if kid_of(login.tokens.access_token) == load.new_kid:
                load.new_kid_issued.set()

    async with asyncio.timeout(90):
        clients = [asyncio.create_task(client(n)) for n in range(CLIENTS)]
        try:
            await asyncio.sleep(1)  # steady load first
            output = await run_rotate_command(mesh.settings)
            new_keys = [
                k for k in read_keys(mesh.settings.jwt_keys_dir, 0).keys if k.kid != old_kid
            ]
            assert len(new_keys) == 1, output
            new = new_keys[0]
            assert f"created {new.kid}: published now" in output
            # Keep the load on past the activation, until tokens of the new key have been used.
            load.new_kid = new.kid
            await load.new_kid_issued.wait()
            await asyncio.sleep(1.5)
        finally:
            stop.set()
            await asyncio.gather(*clients)

    assert load.failures == []
    assert load.verified > 100, load.verified
    # Each token carries the key that signs at its issue time: the old one before the
    # activation, the new one from then on, on both replicas alike.
    for token in load.tokens:
        assert kid_of(token) == (new.kid if issued_at(token) >= new.activates_at else old_kid)
    assert {kid_of(t) for t in load.tokens} == {old_kid, new.kid}
    # The verifier knew the new key before its first token existed: published ahead.
    assert load.kid_first_fetched_at[new.kid] < new.activates_at
    # The old key still verifies: its tokens are valid until they expire.
    jwks = await mesh.auth[0].GetJwks(auth_pb2.GetJwksRequest())
    assert [key.kid for key in jwks.keys] == [old_kid, new.kid]
    assert (await verifier.verify(old_token)).account_id == jwt.decode(
        old_token, options={"verify_signature": False}
    )["sub"]
