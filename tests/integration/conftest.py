"""Integration fixtures for services that need a running auth_svc (and user_svc).

Built on the session fixtures of tests/conftest.py (`mesh_secret`, and `data_access_address`:
data_access in-process against a fresh PostgreSQL). Everything runs on the session event loop.

Fixtures:
- `auth_address` (session) -> str: "127.0.0.1:PORT" of auth_svc running in-process (built with
  `auth_svc.server.build_definition`, served with `tests.helpers.serving`), talking to
  `data_access_address` with the caller token derived from `mesh_secret`, bcrypt cost 4 and a
  fresh signing key in a temporary key folder. Stopped at the end of the session.
- `auth_channel` (session) -> grpc.aio.Channel to `auth_address`.
- `auth_stub` (session) -> meshgram.auth.v1 AuthServiceStub on `auth_channel`.
- `new_user` (session) -> async factory `await new_user(username=None, password=None)` that
  registers a unique account through AuthService.Register, logs it in and returns a `NewUser`
  (email, username, password, account_id, access_token, refresh_token, plus `.metadata`, the
  `authorization: Bearer ...` call metadata).
- `user` (function) -> a fresh `NewUser` for one test.
- `user_settings` (session) -> `UserSettings` of an in-process user_svc against the session's
  data_access and auth_svc.
- `user_address` (session) -> "127.0.0.1:PORT" of that user_svc, verifying tokens with auth_svc's
  JWKS.
- `users` (session) -> UserService stub on `user_address`.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import grpc
import pytest
from pydantic import SecretStr

from auth_svc.server import build_definition as build_auth
from auth_svc.settings import AuthSettings
from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshgram.user.v1 import user_pb2_grpc
from tests.helpers import service_settings, serving
from tools.mailbox import open_mailbox
from user_svc.server import build_definition as build_user
from user_svc.settings import UserSettings

if TYPE_CHECKING:
    # The async stub type exists only for type checkers (AuthServiceStub on an aio channel).
    from meshgram.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub


# Short, so that tests can wait past it.
REUSE_WINDOW_SECONDS = 0.5
# The one page origin the session's auth_svc lets use the refresh-token cookie.
BROWSER_ORIGIN = "http://app.example.test"


@dataclass(frozen=True)
class NewUser:
    """A registered and logged-in account, with the secrets a test needs to act as it."""

    email: str
    username: str
    password: str
    account_id: str
    access_token: str
    refresh_token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata that authenticates as this account."""
        return (("authorization", f"Bearer {self.access_token}"),)


class UserFactory(Protocol):
    """Signature of the `new_user` fixture."""

    def __call__(
        self, *, username: str | None = None, password: str | None = None
    ) -> Awaitable[NewUser]:
        """Register and log in a unique account."""
        ...


@pytest.fixture(scope="session")
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the session mailbox's stored mails."""
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="session")
async def mailbox_port(mail_dir: Path) -> AsyncIterator[int]:
    """A real SMTP server on loopback storing into mail_dir; yields its port."""
    server = await open_mailbox(mail_dir)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture(scope="session")
async def auth_address(
    data_access_address: str,
    mesh_secret: str,
    mailbox_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[str]:
    """auth_svc in-process against the session's data_access; yields "127.0.0.1:PORT"."""
    settings = service_settings(
        AuthSettings,
        mesh_secret,
        data_access_address,
        MESHGRAM_ENV="development",  # the signing key is generated in the temporary folder
        password_pepper=SecretStr(secrets.token_urlsafe(32)),
        bcrypt_rounds=4,  # the minimum: hashing speed, not strength, matters in tests
        jwt_keys_dir=tmp_path_factory.mktemp("auth-keys") / "jwt",
        # Never there: a developer's own var/keys/jwt-ed25519.pem must not be adopted.
        jwt_private_key_file=tmp_path_factory.mktemp("auth-no-key") / "jwt-ed25519.pem",
        refresh_reuse_window_seconds=REUSE_WINDOW_SECONDS,
        smtp_host="127.0.0.1",
        smtp_port=mailbox_port,
        mail_poll_seconds=0.2,
        mail_cooldown_seconds=2,
        browser_origins=BROWSER_ORIGIN,
        # Every test calls from loopback: their deliberate failures must not add up to a
        # throttle of it (the defence tests use their own addresses and thresholds).
        client_lockout_after_failures=100_000,
    )
    async with serving(build_auth(settings)) as address:
        yield address


@pytest.fixture(scope="session")
async def auth_channel(auth_address: str) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the session's auth_svc."""
    async with grpc.aio.insecure_channel(auth_address) as channel:
        yield channel


@pytest.fixture(scope="session")
def auth_stub(auth_channel: grpc.aio.Channel) -> AuthServiceAsyncStub:
    """AuthService client stub on the session's auth_svc."""
    return auth_pb2_grpc.AuthServiceStub(auth_channel)


@pytest.fixture(scope="session")
def new_user(auth_stub: AuthServiceAsyncStub) -> UserFactory:
    """Factory that registers and logs in a unique account; see the module docstring."""

    async def make(*, username: str | None = None, password: str | None = None) -> NewUser:
        unique = uuid.uuid4().hex[:12]
        username = username or f"user_{unique}"
        password = password or f"password-{uuid.uuid4().hex}"
        email = f"{username}.{unique}@example.com"
        registered = await auth_stub.Register(
            auth_pb2.RegisterRequest(email=email, username=username, password=password)
        )
        login = await auth_stub.Login(auth_pb2.LoginRequest(email=email, password=password))
        return NewUser(
            email=registered.account.email,
            username=registered.account.username,
            password=password,
            account_id=registered.account.id,
            access_token=login.tokens.access_token,
            refresh_token=login.tokens.refresh_token,
        )

    return make


@pytest.fixture
async def user(new_user: UserFactory) -> NewUser:
    """A fresh registered and logged-in account for one test."""
    return await new_user()


@pytest.fixture(scope="session")
def user_settings(data_access_address: str, mesh_secret: str, auth_address: str) -> UserSettings:
    """Settings of an in-process user_svc against the session's data_access and auth_svc."""
    return service_settings(
        UserSettings,
        mesh_secret,
        data_access_address,
        auth_addr=auth_address,
        call_timeout_seconds=5,
    )


@pytest.fixture(scope="session")
async def user_address(user_settings: UserSettings) -> AsyncIterator[str]:
    """user_svc verifying tokens against auth_svc's published JWKS."""
    async with serving(build_user(user_settings)) as address:
        yield address


@pytest.fixture(scope="session")
async def users(user_address: str) -> AsyncIterator[user_pb2_grpc.UserServiceStub]:
    """UserService stub on the session's user_svc."""
    async with grpc.aio.insecure_channel(user_address) as channel:
        yield user_pb2_grpc.UserServiceStub(channel)
