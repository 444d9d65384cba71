"""storage_svc's composition root and the mapping between records, domain and public messages."""

from __future__ import annotations

import secrets
from pathlib import Path

from google.protobuf import timestamp_pb2
from pydantic import SecretStr

from meshgram.dataaccess.v1 import dataaccess_pb2
from storage_svc.clients import image_from_record
from storage_svc.images import ImageView
from storage_svc.server import MAX_UPLOAD_MESSAGE_BYTES, build_definition
from storage_svc.servicer import image_message
from storage_svc.settings import StorageSettings
from tests.helpers import assert_public_definition, free_port, no_keys


async def test_definition_names_services_and_closes_its_channels(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = StorageSettings(
        data_access_addr=address,
        data_access_token=SecretStr(secrets.token_urlsafe(32)),
        auth_addr=address,
        blob_dir=tmp_path,
        spool_dir=tmp_path / "spool",
        media_url_keys=SecretStr("k1:" + secrets.token_urlsafe(32)),
        call_timeout_seconds=0.5,
    )
    definition = build_definition(settings, jwks_fetcher=no_keys)
    # Upload chunks of up to 1 MiB (more through Envoy) must fit in one message.
    assert definition.max_message_bytes == MAX_UPLOAD_MESSAGE_BYTES > 2 * 1024 * 1024
    await assert_public_definition(
        definition, name="storage_svc", service="meshgram.storage.v1.StorageService"
    )


def test_records_become_public_images() -> None:
    created = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=5_000)
    record = dataaccess_pb2.ImageRecord(
        id="6f1c7f0e-2a4b-4c8e-9a8e-0d3c2b1a0f9e",
        owner_id="owner",
        content_type="image/webp",
        size_bytes=12_345,
        width=640,
        height=480,
        sha256="ab" * 32,
        create_time=created,
    )
    message = image_message(ImageView(image_from_record(record), variants=(), for_owner=True))
    # The uploaded file's digest is the owner's business only.
    seen = image_message(ImageView(image_from_record(record), variants=(), for_owner=False))
    assert seen.sha256 == ""
    assert seen.id == record.id
    assert message.id == record.id
    assert message.owner_id == "owner"
    assert message.content_type == "image/webp"
    assert (message.size_bytes, message.width, message.height) == (12_345, 640, 480)
    assert message.sha256 == "ab" * 32
    assert message.create_time == created
