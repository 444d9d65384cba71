"""The caller policy: who a call comes from (its certificate over mutual TLS, its token over
plaintext) and which service may call which data-access RPC."""

from __future__ import annotations

import pytest

from data_access.callers import CallerPolicy
from meshkit.caller import CALLER_HEADER, CALLER_TOKEN_HEADER, derive_caller_token
from meshkit.errors import PermissionDenied, Unauthenticated
from meshkit.reasons import Reason

SECRET = "unit-test-mesh-secret"
PLAINTEXT: dict[str, list[bytes]] = {}
"""grpcio's auth context of a plaintext call: empty."""
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
    assert CallerPolicy(SECRET).refusal(method, PLAINTEXT, _as(caller)) is None


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
    refusal = CallerPolicy(SECRET).refusal(method, PLAINTEXT, _as(caller))

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
    refusal = CallerPolicy(SECRET).refusal(ACCOUNTS, PLAINTEXT, metadata)

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
    assert CallerPolicy(SECRET).refusal(method, PLAINTEXT, []) is None


def _tls(*uris: str) -> dict[str, list[bytes]]:
    """grpcio's auth context of a mutual-TLS call whose verified certificate names uris (the
    keys and values grpcio 1.85 exposes)."""
    return {
        "transport_security_type": [b"ssl"],
        "x509_subject_alternative_name": [b"localhost", b"127.0.0.1", *(u.encode() for u in uris)],
        "peer_uri": [u.encode() for u in uris],
    }


def _spiffe(workload: str) -> dict[str, list[bytes]]:
    return _tls(f"spiffe://meshgram.internal/{workload}")


@pytest.mark.parametrize(
    ("caller", "method"),
    [("auth_svc", ACCOUNTS), ("auth_svc", MAIL), ("user_svc", PROFILES), ("storage_svc", MEDIA)],
)
def test_over_tls_the_certificate_names_the_caller(caller: str, method: str) -> None:
    policy = CallerPolicy(None)

    assert policy.caller(_spiffe(caller), []) == caller
    assert policy.refusal(method, _spiffe(caller), []) is None


def test_over_tls_headers_cannot_speak_for_another_service() -> None:
    # user_svc's certificate with auth_svc's valid token: the certificate decides.
    refusal = CallerPolicy(SECRET).refusal(ACCOUNTS, _spiffe("user_svc"), _as("auth_svc"))

    assert isinstance(refusal, PermissionDenied)
    assert refusal.reason == Reason.CALLER_NOT_ALLOWED


@pytest.mark.parametrize("workload", ["edge", "intruder_svc"])
def test_a_workload_with_no_place_in_the_list_is_permission_denied(workload: str) -> None:
    refusal = CallerPolicy(None).refusal(PROFILES, _spiffe(workload), [])

    assert isinstance(refusal, PermissionDenied)
    assert refusal.reason == Reason.CALLER_NOT_ALLOWED


@pytest.mark.parametrize(
    "auth_context",
    [
        _tls(),
        _tls("spiffe://other.example/auth_svc"),
        _tls("spiffe://meshgram.internal/ns/auth_svc"),
        _tls("spiffe://meshgram.internal/auth_svc", "spiffe://meshgram.internal/user_svc"),
        _tls("https://meshgram.internal/auth_svc"),
    ],
    ids=["no-uri", "other-trust-domain", "nested-path", "two-identities", "not-spiffe"],
)
def test_a_certificate_without_one_identity_of_the_domain_is_unauthenticated(
    auth_context: dict[str, list[bytes]],
) -> None:
    # Even with a valid token beside it: over TLS only the certificate counts.
    refusal = CallerPolicy(SECRET).refusal(ACCOUNTS, auth_context, _as("auth_svc"))

    assert isinstance(refusal, Unauthenticated)
    assert refusal.reason == Reason.CALLER_UNKNOWN


def test_another_trust_domain_can_be_configured() -> None:
    policy = CallerPolicy(None, trust_domain="prod.example")

    assert policy.refusal(ACCOUNTS, _tls("spiffe://prod.example/auth_svc"), []) is None
    assert isinstance(policy.refusal(ACCOUNTS, _spiffe("auth_svc"), []), Unauthenticated)


def test_without_a_mesh_secret_no_token_is_accepted() -> None:
    refusal = CallerPolicy(None).refusal(ACCOUNTS, PLAINTEXT, _as("auth_svc"))

    assert isinstance(refusal, Unauthenticated)
