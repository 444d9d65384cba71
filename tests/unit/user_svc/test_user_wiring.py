"""user_svc's composition root and the mapping between records, domain and public messages."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from meshgram.dataaccess.v1 import dataaccess_pb2
from user_svc.clients import profile_from_record
from user_svc.server import build_definition
from user_svc.servicer import profile_message
from user_svc.settings import UserSettings


def closed_port_address() -> str:
    """An address on which nothing listens (a port just released by the OS)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


async def no_keys() -> list[dict[str, str]]:
    return []


async def test_definition_names_services_and_closes_its_channels() -> None:
    address = closed_port_address()
    settings = UserSettings(data_access_addr=address, auth_addr=address, call_timeout_seconds=0.5)
    definition = build_definition(settings, jwks_fetcher=no_keys)
    assert definition.name == "user_svc"
    assert list(definition.service_names) == ["meshgram.user.v1.UserService"]
    assert set(definition.reflection_names) == {
        "meshgram.auth.v1.AuthService",
        "meshgram.user.v1.UserService",
        "meshgram.storage.v1.StorageService",
    }
    # Nothing answers on the dependencies' addresses: the service must not claim to serve.
    assert await definition.check_dependencies() is False
    for closer in definition.on_shutdown:
        await closer()


def test_records_become_public_profiles_with_timestamps() -> None:
    created = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=123_000)
    updated = timestamp_pb2.Timestamp(seconds=1_700_000_500)
    record = dataaccess_pb2.ProfileRecord(
        account_id="5f0c",
        username="ada",
        display_name="Ada",
        bio="Counting machines.",
        avatar_image_id="img",
        create_time=created,
        update_time=updated,
    )
    profile = profile_from_record(record)
    assert profile.create_time == datetime.fromtimestamp(1_700_000_000.000123, tz=UTC)
    message = profile_message(profile)
    assert message.account_id == "5f0c"
    assert message.username == "ada"
    assert message.display_name == "Ada"
    assert message.bio == "Counting machines."
    assert message.avatar_image_id == "img"
    assert message.create_time == created
    assert message.update_time == updated
