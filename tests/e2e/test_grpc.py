"""The slice in native gRPC through Envoy with generated stubs (signed in with the Python
client, which sends the access token), plus grpcurl as a user runs it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.api import httpbody_pb2
from google.rpc import error_details_pb2, status_pb2
from meshgram_client import aio

from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshgram.storage.v1 import storage_pb2
from meshgram.user.v1 import user_pb2, user_pb2_grpc
from tests.e2e.support import new_user, png_bytes, sign_up
from tools.mesh import Mesh

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status carried in an error's trailers."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no status details")


async def test_slice_over_native_grpc(client: aio.Session) -> None:
    user = await sign_up(client)
    me = await client.users.GetMyProfile(user_pb2.GetMyProfileRequest())
    assert me.profile.username == user.username

    image = png_bytes(64, 48)

    async def chunks() -> AsyncIterator[storage_pb2.UploadImageRequest]:
        for start in range(0, len(image), 100):
            yield storage_pb2.UploadImageRequest(
                body=httpbody_pb2.HttpBody(
                    content_type="text/plain", data=image[start : start + 100]
                )
            )

    uploaded = await client.storage.UploadImage(chunks())
    assert uploaded.image.content_type == "image/png"
    assert uploaded.image.size_bytes == len(image)

    # The owner gets the original back (the mesh keeps originals); viewers get renditions.
    received = b""
    async for part in client.storage.DownloadImage(
        storage_pb2.DownloadImageRequest(image_id=uploaded.image.id, variant="original")
    ):
        assert part.content_type == "image/png"
        received += part.data
    assert received == image

    await client.storage.SetAvatar(storage_pb2.SetAvatarRequest(image_id=uploaded.image.id))
    again = await client.users.GetMyProfile(user_pb2.GetMyProfileRequest())
    assert again.profile.avatar_image_id == uploaded.image.id


async def test_invalid_register_carries_field_violations(edge_channel: grpc.aio.Channel) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    user = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Register(
            auth_pb2.RegisterRequest(email=user.email, username=user.username, password="short")
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = []
    for detail in status_details(caught.value).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    assert fields == ["password"]


async def test_duplicate_username_is_already_exists(edge_channel: grpc.aio.Channel) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    user = new_user()
    request = auth_pb2.RegisterRequest(
        email=user.email, username=user.username, password=user.password
    )
    await auth.Register(request)
    other = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Register(
            auth_pb2.RegisterRequest(
                email=other.email, username=user.username, password=user.password
            )
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_wrong_password_and_unknown_email_same_status(edge_channel: grpc.aio.Channel) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    user = new_user()
    await auth.Register(
        auth_pb2.RegisterRequest(email=user.email, username=user.username, password=user.password)
    )
    failures = []
    for email, password in ((user.email, "wrong password!"), ("x" + user.email, user.password)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.Login(auth_pb2.LoginRequest(email=email, password=password))
        failures.append((caught.value.code(), caught.value.details()))
    assert failures[0] == failures[1]
    assert failures[0][0] == grpc.StatusCode.UNAUTHENTICATED


async def test_calls_without_a_token_are_unauthenticated(edge_channel: grpc.aio.Channel) -> None:
    users = user_pb2_grpc.UserServiceStub(edge_channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.GetMyProfile(user_pb2.GetMyProfileRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_non_image_upload_is_invalid_argument(client: aio.Session) -> None:
    await sign_up(client)

    async def chunks() -> AsyncIterator[storage_pb2.UploadImageRequest]:
        yield storage_pb2.UploadImageRequest(
            body=httpbody_pb2.HttpBody(content_type="image/png", data=b"<svg/> pretending")
        )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.storage.UploadImage(chunks())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_data_access_is_not_reachable_through_the_edge(
    edge_channel: grpc.aio.Channel,
) -> None:
    from meshgram.dataaccess.v1 import dataaccess_pb2, dataaccess_pb2_grpc

    store = dataaccess_pb2_grpc.AccountStoreServiceStub(edge_channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await store.GetCredentials(dataaccess_pb2.GetCredentialsRequest(email="a@example.com"))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def run_grpcurl(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    """grpcurl -plaintext [args...] EDGE [method]; the last arg is the verb or method."""
    *flags, last = args
    command = [GRPCURL, "-plaintext", *flags, mesh.edge_address, *last.split(" ")]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def test_grpcurl_lists_every_public_service_and_not_data_access(mesh: Mesh) -> None:
    listed = run_grpcurl(mesh, "list")
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {
        "meshgram.auth.v1.AuthService",
        "meshgram.user.v1.UserService",
        "meshgram.storage.v1.StorageService",
    } <= services
    assert not any("dataaccess" in name for name in services)


@pytest.mark.parametrize(
    "service",
    [
        "meshgram.auth.v1.AuthService",
        "meshgram.user.v1.UserService",
        "meshgram.storage.v1.StorageService",
    ],
)
def test_grpcurl_describes_each_public_service(mesh: Mesh, service: str) -> None:
    described = run_grpcurl(mesh, f"describe {service}")
    assert described.returncode == 0, described.stderr
    assert f"service {service.rsplit('.', 1)[1]}" in described.stdout


def test_grpcurl_register_login_and_profile(mesh: Mesh) -> None:
    user = new_user()
    body = json.dumps({"email": user.email, "username": user.username, "password": user.password})
    registered = run_grpcurl(mesh, "-d", body, "meshgram.auth.v1.AuthService/Register")
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout)["account"]["username"] == user.username

    login_body = json.dumps({"email": user.email, "password": user.password})
    logged_in = run_grpcurl(mesh, "-d", login_body, "meshgram.auth.v1.AuthService/Login")
    access = json.loads(logged_in.stdout)["tokens"]["access_token"]
    me = run_grpcurl(
        mesh, "-H", f"authorization: Bearer {access}", "meshgram.user.v1.UserService/GetMyProfile"
    )
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["profile"]["username"] == user.username

    refused = run_grpcurl(mesh, "meshgram.user.v1.UserService/GetMyProfile")
    assert refused.returncode != 0
    assert "Unauthenticated" in refused.stderr
    # The google.rpc details decode at the client: reflection at the edge serves their types.
    assert "TOKEN_MISSING" in refused.stderr


async def test_corrupt_protobuf_is_invalid_argument(edge_channel: grpc.aio.Channel) -> None:
    # Bytes that are not a LoginRequest: a field header promising more data than follows.
    login = edge_channel.unary_unary("/meshgram.auth.v1.AuthService/Login")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(b"\x0a\x7f\x01")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DecodeError" not in (caught.value.details() or "")


async def test_corrupt_upload_chunk_is_invalid_argument(client: aio.Session) -> None:
    await sign_up(client)
    # A raw call on the session's channel still carries the access token.
    upload = client.channel.stream_unary("/meshgram.storage.v1.StorageService/UploadImage")

    async def chunks() -> AsyncIterator[bytes]:
        yield storage_pb2.UploadImageRequest(
            body=httpbody_pb2.HttpBody(data=png_bytes()[:10])
        ).SerializeToString()
        yield b"\x0a\x7f\x01"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await upload(chunks())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_malformed_grpc_timeout_cannot_hurt_other_callers(
    mesh: Mesh, edge_channel: grpc.aio.Channel
) -> None:
    # Someone sends garbage deadlines; the edge must not pass them on to the shared upstream
    # connections, where they would break everybody's calls.
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed to send a raw HTTP/2 request"
    for _ in range(20):
        sender = await asyncio.create_subprocess_exec(
            curl,
            "-s",
            "-o",
            "/dev/null",
            "--http2-prior-knowledge",
            "-X",
            "POST",
            "-H",
            "content-type: application/grpc",
            "-H",
            "grpc-timeout: abc",
            "--data-binary",
            "@-",
            f"http://{mesh.edge_address}/meshgram.auth.v1.AuthService/GetJwks",
            stdin=asyncio.subprocess.PIPE,
        )
        await sender.communicate(b"\x00\x00\x00\x00\x00")
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    for _ in range(20):
        reply = await auth.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
        assert reply.keys


def test_grpcurl_cannot_describe_internal_messages_at_the_edge(mesh: Mesh) -> None:
    described = run_grpcurl(mesh, "describe meshgram.dataaccess.v1.GetCredentialsResponse")
    assert described.returncode != 0
    assert "password_hash" not in described.stdout


async def test_oversized_message_is_resource_exhausted_at_the_edge(
    edge_channel: grpc.aio.Channel,
) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Login(auth_pb2.LoginRequest(email="big@example.com", password="p" * 400_000))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_not_modified_download_says_so_in_its_metadata(client: aio.Session) -> None:
    # Over gRPC a current copy gets no chunks and the documented marker, which the edge keeps
    # (it turns the marker into 304 for REST reads only).
    await sign_up(client)

    async def one_chunk() -> AsyncIterator[storage_pb2.UploadImageRequest]:
        yield storage_pb2.UploadImageRequest(body=httpbody_pb2.HttpBody(data=png_bytes()))

    image = (await client.storage.UploadImage(one_chunk())).image
    w320 = next(v for v in image.variants if v.name == "w320")
    webp = next(r for r in w320.renditions if r.format == "webp")
    call = client.storage.DownloadImage(
        storage_pb2.DownloadImageRequest(image_id=image.id, variant="w320", format="webp"),
        metadata=(("if-none-match", f'"{webp.sha256}"'),),
    )
    parts = [part async for part in call]
    assert parts == []
    metadata = dict(await call.initial_metadata())
    assert metadata["meshgram-status"] == "304"
    assert metadata["etag"] == f'"{webp.sha256}"'
