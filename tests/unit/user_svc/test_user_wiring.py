"""user_svc's composition root and the mapping between records, domain and public messages."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from pydantic import SecretStr

from meshgram.dataaccess.v1 import dataaccess_pb2
from tests.helpers import assert_public_definition, free_port, no_keys
from user_svc.clients import profile_from_record
from user_svc.server import build_definition
from user_svc.servicer import profile_message
from user_svc.settings import UserSettings


async def test_definition_names_services_and_closes_its_channels() -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = UserSettings(
        data_access_addr=address,
        data_access_token=SecretStr(secrets.token_urlsafe(32)),
        auth_addr=address,
        call_timeout_seconds=0.5,
    )
    await assert_public_definition(
        build_definition(settings, jwks_fetcher=no_keys),
        name="user_svc",
        service="meshgram.user.v1.UserService",
    )


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
