"""The caller policy: which service may call which data-access RPC."""

from __future__ import annotations

import pytest

from data_access.callers import CallerPolicy
from meshkit.caller import CALLER_HEADER, CALLER_TOKEN_HEADER, derive_caller_token
from meshkit.errors import PermissionDenied, Unauthenticated
from meshkit.reasons import Reason

SECRET = "unit-test-mesh-secret"
ACCOUNTS = "/meshgram.dataaccess.v1.AccountStoreService/GetCredentials"
PROFILES = "/meshgram.dataaccess.v1.ProfileStoreService/GetProfile"
MEDIA = "/meshgram.dataaccess.v1.MediaStoreService/SetAvatar"
MAIL = "/meshgram.dataaccess.v1.MailOutboxService/ClaimMail"
SECURITY = "/meshgram.dataaccess.v1.AccountSecurityService/GetMfa"


def _as(caller: str, secret: str = SECRET) -> list[tuple[str, str]]:
    return [(CALLER_HEADER, caller), (CALLER_TOKEN_HEADER, derive_caller_token(secret, caller))]


@pytest.mark.parametrize(
    ("caller", "method"),
    [
        ("auth_svc", ACCOUNTS),
        ("auth_svc", SECURITY),
        ("auth_svc", MAIL),
        ("user_svc", PROFILES),
        ("storage_svc", MEDIA),
    ],
)
def test_each_service_may_call_its_own_store(caller: str, method: str) -> None:
    assert CallerPolicy(SECRET).refusal(method, _as(caller)) is None


@pytest.mark.parametrize(
    ("caller", "method"),
    [
        ("user_svc", ACCOUNTS),  # user_svc must never read password hashes
        ("storage_svc", ACCOUNTS),
        ("auth_svc", PROFILES),
        ("auth_svc", MEDIA),
        ("user_svc", MEDIA),
        ("storage_svc", PROFILES),
        ("user_svc", MAIL),  # only auth_svc reads the sealed mails
        ("storage_svc", MAIL),
        ("user_svc", SECURITY),  # nor may any other read sealed TOTP secrets
        ("storage_svc", SECURITY),
    ],
)
def test_known_caller_outside_its_store_is_permission_denied(caller: str, method: str) -> None:
    refusal = CallerPolicy(SECRET).refusal(method, _as(caller))

    assert isinstance(refusal, PermissionDenied)
    assert refusal.reason == Reason.CALLER_NOT_ALLOWED


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [(CALLER_HEADER, "auth_svc")],
        [(CALLER_HEADER, "auth_svc"), (CALLER_TOKEN_HEADER, "")],
        _as("auth_svc", secret="another-mesh"),
        [(CALLER_HEADER, "auth_svc"), _as("user_svc")[1]],
        _as("intruder_svc"),
    ],
    ids=["none", "no-token", "empty-token", "other-secret", "borrowed-token", "unknown-name"],
)
def test_unproven_caller_is_unauthenticated(metadata: list[tuple[str, str]]) -> None:
    refusal = CallerPolicy(SECRET).refusal(ACCOUNTS, metadata)

    assert isinstance(refusal, Unauthenticated)
    assert refusal.reason == Reason.CALLER_UNKNOWN


@pytest.mark.parametrize(
    "method",
    [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ],
)
def test_health_and_reflection_need_no_credentials(method: str) -> None:
    assert CallerPolicy(SECRET).refusal(method, []) is None
