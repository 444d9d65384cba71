"""UserService through real stubs: user_svc -> data_access -> PostgreSQL, tokens from auth_svc."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2

from meshgram.user.v1 import user_pb2, user_pb2_grpc
from meshkit.peers import VerifyingPeers
from tests.helpers import failure_of, free_port, health_status
from tests.integration.user_svc.conftest import LocalIssuer
from user_svc.settings import UserSettings

pytestmark = pytest.mark.integration

Stub = user_pb2_grpc.UserServiceStub


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def update(display_name: str = "", bio: str = "", *paths: str) -> user_pb2.UpdateMyProfileRequest:
    return user_pb2.UpdateMyProfileRequest(
        profile=user_pb2.Profile(display_name=display_name, bio=bio),
        update_mask=field_mask_pb2.FieldMask(paths=list(paths)),
    )


async def test_my_profile_comes_from_the_token(users: Stub, user: Any) -> None:
    reply = await users.GetMyProfile(user_pb2.GetMyProfileRequest(), metadata=user.metadata)
    profile = reply.profile
    assert (profile.account_id, profile.username) == (user.account_id, user.username)
    assert (profile.display_name, profile.bio, profile.avatar_image_id) == ("", "", "")
    assert profile.create_time.seconds > 0
    assert profile.update_time.ToDatetime() >= profile.create_time.ToDatetime()


async def test_update_applies_only_the_masked_fields(users: Stub, user: Any) -> None:
    first = await users.UpdateMyProfile(
        update("  Ada Lovelace ", "not applied", "display_name"), metadata=user.metadata
    )
    assert (first.profile.display_name, first.profile.bio) == ("Ada Lovelace", "")
    second = await users.UpdateMyProfile(
        update("not applied", "Counting\nmachines.", "bio"), metadata=user.metadata
    )
    assert (second.profile.display_name, second.profile.bio) == (
        "Ada Lovelace",
        "Counting\nmachines.",
    )
    again = await users.GetMyProfile(user_pb2.GetMyProfileRequest(), metadata=user.metadata)
    assert again.profile == second.profile


async def test_empty_mask_updates_only_the_fields_that_are_set(users: Stub, user: Any) -> None:
    reply = await users.UpdateMyProfile(update("Ada", "Hello"), metadata=user.metadata)
    assert (reply.profile.display_name, reply.profile.bio) == ("Ada", "Hello")
    bio_only = await users.UpdateMyProfile(update("", "New bio"), metadata=user.metadata)
    assert (bio_only.profile.display_name, bio_only.profile.bio) == ("Ada", "New bio")
    unchanged = await users.UpdateMyProfile(update(), metadata=user.metadata)
    assert (unchanged.profile.display_name, unchanged.profile.bio) == ("Ada", "New bio")


async def test_fields_named_in_the_mask_are_cleared(users: Stub, user: Any) -> None:
    await users.UpdateMyProfile(update("Ada", "Hello"), metadata=user.metadata)
    cleared = await users.UpdateMyProfile(
        update("", "", "display_name", "bio"), metadata=user.metadata
    )
    assert (cleared.profile.display_name, cleared.profile.bio) == ("", "")


@pytest.mark.parametrize("path", ["username", "avatar_image_id", "account_id", "profile.bio"])
async def test_other_mask_paths_are_invalid(users: Stub, user: Any, path: str) -> None:
    failure = await failure_of(
        users.UpdateMyProfile(update("x", "y", path), metadata=user.metadata)
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.reason == "INVALID_FIELD"
    assert failure.fields == ["update_mask"]


async def test_update_without_a_profile_is_invalid(users: Stub, user: Any) -> None:
    await users.UpdateMyProfile(update("Kept", "Kept too"), metadata=user.metadata)
    failure = await failure_of(
        users.UpdateMyProfile(user_pb2.UpdateMyProfileRequest(), metadata=user.metadata)
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["profile"])
    me = await users.GetMyProfile(user_pb2.GetMyProfileRequest(), metadata=user.metadata)
    assert (me.profile.display_name, me.profile.bio) == ("Kept", "Kept too")


async def test_too_long_or_control_values_name_their_fields(users: Stub, user: Any) -> None:
    long_bio = await failure_of(
        users.UpdateMyProfile(update("", "b" * 301), metadata=user.metadata)
    )
    assert long_bio.code == grpc.StatusCode.INVALID_ARGUMENT
    assert long_bio.fields == ["profile.bio"]
    both = await failure_of(
        users.UpdateMyProfile(update("d" * 65, "bell\x07"), metadata=user.metadata)
    )
    assert both.fields == ["profile.display_name", "profile.bio"]
    unchanged = await users.GetMyProfile(user_pb2.GetMyProfileRequest(), metadata=user.metadata)
    assert (unchanged.profile.display_name, unchanged.profile.bio) == ("", "")


async def test_anyone_reads_a_profile_by_username_in_any_case(users: Stub, new_user: Any) -> None:
    reader, owner = await new_user(), await new_user()
    await users.UpdateMyProfile(update("Owner", "Public bio"), metadata=owner.metadata)
    reply = await users.GetProfile(
        user_pb2.GetProfileRequest(username=owner.username.upper()), metadata=reader.metadata
    )
    assert reply.profile.account_id == owner.account_id
    assert (reply.profile.username, reply.profile.bio) == (owner.username, "Public bio")


async def test_unknown_username_is_not_found(users: Stub, user: Any) -> None:
    failure = await failure_of(
        users.GetProfile(
            user_pb2.GetProfileRequest(username="no_such_user_zz"), metadata=user.metadata
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "PROFILE_NOT_FOUND")


@pytest.mark.parametrize("username", ["", "x", "not a username", "é" * 10, "a" * 500])
async def test_malformed_username_is_invalid_not_internal(
    users: Stub, user: Any, username: str
) -> None:
    failure = await failure_of(
        users.GetProfile(user_pb2.GetProfileRequest(username=username), metadata=user.metadata)
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["username"]


async def test_calls_without_a_token_are_unauthenticated(users: Stub) -> None:
    for call in (
        users.GetMyProfile(user_pb2.GetMyProfileRequest()),
        users.UpdateMyProfile(update("x", "y")),
        users.GetMyProfile(
            user_pb2.GetMyProfileRequest(), metadata=(("authorization", "Basic x"),)
        ),
    ):
        failure = await failure_of(call)
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")


async def test_profile_pages_answer_signed_out_visitors_but_not_broken_tokens(
    users: Stub, user: Any
) -> None:
    page = await users.GetProfile(user_pb2.GetProfileRequest(username=user.username))
    assert page.viewer == user_pb2.VIEWER_SIGNED_OUT
    assert page.profile.username == user.username
    assert page.profile.email == ""
    for header in ("Basic x", "Bearer not-a-token"):
        failure = await failure_of(
            users.GetProfile(
                user_pb2.GetProfileRequest(username=user.username),
                metadata=(("authorization", header),),
            )
        )
        assert failure.code == grpc.StatusCode.UNAUTHENTICATED


async def test_garbage_and_tampered_tokens_are_unauthenticated(users: Stub, user: Any) -> None:
    token = user.access_token
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    header, payload, signature = token.split(".")
    swapped = ".".join([header, payload[::-1], signature])
    # A padded signature decodes to the same bytes; only the canonical spelling is accepted.
    padded = token + "=="
    for bad in ("garbage", "a.b.c", tampered, swapped, padded):
        failure = await failure_of(
            users.GetMyProfile(user_pb2.GetMyProfileRequest(), metadata=bearer(bad))
        )
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_expired_tokens_are_unauthenticated(
    users_trusting_issuer: Stub, issuer: Any, user: Any
) -> None:
    fresh = issuer.token(user.account_id, user.username)
    reply = await users_trusting_issuer.GetMyProfile(
        user_pb2.GetMyProfileRequest(), metadata=bearer(fresh)
    )
    assert reply.profile.account_id == user.account_id
    expired = issuer.token(user.account_id, user.username, lifetime=-600)
    failure = await failure_of(
        users_trusting_issuer.GetMyProfile(user_pb2.GetMyProfileRequest(), metadata=bearer(expired))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


async def test_tokens_of_other_issuers_or_audiences_are_refused(
    users_trusting_issuer: Stub, issuer: Any, user: Any
) -> None:
    for token in (
        issuer.token(user.account_id, user.username, aud="someone-else"),
        issuer.token(user.account_id, user.username, iss="someone-else"),
        user.access_token,  # signed by auth_svc, whose key this server does not trust
    ):
        failure = await failure_of(
            users_trusting_issuer.GetMyProfile(
                user_pb2.GetMyProfileRequest(), metadata=bearer(token)
            )
        )
        assert failure.code == grpc.StatusCode.UNAUTHENTICATED


async def test_token_of_a_vanished_account_is_not_found(
    users_trusting_issuer: Stub, issuer: Any
) -> None:
    token = issuer.token("00000000-0000-0000-0000-000000000000", "ghost")
    failure = await failure_of(
        users_trusting_issuer.GetMyProfile(user_pb2.GetMyProfileRequest(), metadata=bearer(token))
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND


async def test_health_is_serving_when_data_access_and_auth_are(user_address: str) -> None:
    async with grpc.aio.insecure_channel(user_address) as channel:
        for service in ("", "meshgram.user.v1.UserService"):
            status = await health_status(channel, service)
            assert status == health_pb2.HealthCheckResponse.SERVING


async def test_readiness_fetches_the_keys_and_outlives_auth_outages(
    user_settings: UserSettings, issuer: LocalIssuer
) -> None:
    # Keys come from auth_svc once (here a fetcher that answers, then fails, as an auth_svc
    # that went down would); after that neither auth_svc nor data_access is needed to be ready.
    settings = user_settings.model_copy(
        update={
            "auth_addr": f"127.0.0.1:{free_port()}",
            "data_access_addr": f"127.0.0.1:{free_port()}",
        }
    )
    answers = [issuer.jwks()]

    async def fetch() -> list[dict[str, str]]:
        if not answers:
            raise ConnectionError("auth_svc is down")
        return answers.pop()

    peers = VerifyingPeers.open(settings, jwks_fetcher=fetch)
    try:
        assert peers.verifier.has_keys is False
        assert await peers.serving() is True
        assert await peers.serving() is True  # the fetcher now fails: keys are kept
        principal = await peers.verifier.verify(issuer.token(str(uuid.uuid4()), "someone"))
        assert principal.username == "someone"
    finally:
        await peers.close()


async def test_without_keys_and_without_auth_a_service_is_not_ready(
    user_settings: UserSettings,
) -> None:
    async def down() -> list[dict[str, str]]:
        raise ConnectionError("auth_svc is down")

    peers = VerifyingPeers.open(user_settings, jwks_fetcher=down)
    try:
        assert await peers.serving() is False
    finally:
        await peers.close()
