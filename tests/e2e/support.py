"""Helpers shared by the end-to-end tests: unique users, test images, gRPC-web framing, logs,
expired tokens, mail in the mesh's mailbox."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from meshgram_client import aio
from PIL import Image

from meshgram.auth.v1 import auth_pb2
from tools.mailbox import StoredMail, read_mail, stored_mails
from tools.mesh import Mesh, MeshPorts


@dataclass(frozen=True)
class NewUser:
    """Credentials of a user that a test is about to register."""

    email: str
    username: str
    password: str


def new_user() -> NewUser:
    """Return credentials no other test uses."""
    tag = uuid.uuid4().hex[:10]
    return NewUser(
        email=f"E2E.{tag}@Example.com", username=f"e2e_{tag}", password=f"pw-{tag}-long enough"
    )


async def sign_up(client: aio.Session) -> NewUser:
    """Register a fresh user through a Python client session and log the session in as it."""
    user = new_user()
    await client.auth.Register(
        auth_pb2.RegisterRequest(email=user.email, username=user.username, password=user.password)
    )
    await client.login(user.email, user.password)
    return user


def expired_copy(access_token: str, signing_key_file: Path) -> str:
    """The same access token signed again with auth_svc's key, but expired half an hour ago."""
    header = jwt.get_unverified_header(access_token)
    claims = jwt.decode(access_token, options={"verify_signature": False})
    key = load_pem_private_key(signing_key_file.read_bytes(), password=None)
    now = int(time.time())
    return jwt.encode(
        {**claims, "iat": now - 3600, "exp": now - 1800},
        key,  # type: ignore[arg-type]
        algorithm="EdDSA",
        headers={"kid": header["kid"]},
    )


def png_bytes(width: int = 32, height: int = 24, color: str = "teal") -> bytes:
    """Encode a small solid-colour PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(width: int, height: int) -> bytes:
    """Encode random pixels as PNG: large files from small canvases, as photos are."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def grpc_web_frame(message: bytes) -> bytes:
    """Frame one protobuf message as a gRPC-web data frame (flag 0, 4-byte big-endian length)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def grpc_web_unframe(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """Split a gRPC-web response body into its data messages and its trailers."""
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    offset = 0
    while offset < len(body):
        flag = body[offset]
        (length,) = struct.unpack(">I", body[offset + 1 : offset + 5])
        payload = body[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(payload)
    return messages, trailers


def grpc_web_text_decode(body: bytes) -> bytes:
    """Decode a grpc-web-text body, which may be several padded base64 runs back to back."""
    # Every run is a whole number of 4-character groups, so decoding group by group is exact.
    compact = b"".join(body.split())
    return b"".join(base64.b64decode(compact[i : i + 4]) for i in range(0, len(compact), 4))


def log_lines(mesh: Mesh, process: str) -> list[dict[str, Any]]:
    """The JSON lines a process has logged so far."""
    assert mesh.log_dir is not None
    lines = []
    for raw in (mesh.log_dir / f"{process}.log").read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def wait_for_request(mesh: Mesh, process: str, request_id: str) -> list[dict[str, Any]]:
    """Lines a process logged for one request id, waiting briefly for them to be flushed."""
    deadline = time.monotonic() + 5
    while True:
        found = [line for line in log_lines(mesh, process) if line.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def rest_sign_in(http: httpx.Client) -> tuple[NewUser, dict[str, Any]]:
    """Register a fresh user over REST, log in and return the user and its token pair
    (`accessToken`, `refreshToken`, ...)."""
    user = new_user()
    registered = http.post(
        "/v1/auth:register",
        json={"email": user.email, "username": user.username, "password": user.password},
    )
    assert registered.status_code == 200, registered.text
    login = http.post("/v1/auth:login", json={"email": user.email, "password": user.password})
    assert login.status_code == 200, login.text
    return user, dict(login.json()["tokens"])


def raw_grpc_status(edge_address: str, path: str, body: bytes, headers: dict[str, str]) -> str:
    """POST body as the raw HTTP/2 request body of a gRPC call (content-type application/grpc
    plus headers, nothing else); return the grpc-status answered ("" when none). curl, because
    grpc clients frame every message and add te: trailers themselves; httpx has no HTTP/2 here."""
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed to send a hand-made gRPC request"
    extra = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    # -D - prints the response headers and then the trailers, where grpc-status usually is.
    # -T - streams the body from stdin without a content-length, as grpc clients send it.
    command = [curl, "-sS", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null"]
    command += ["-H", "content-type: application/grpc", *extra, "-X", "POST", "-T", "-"]
    sent = subprocess.run(
        [*command, f"http://{edge_address}{path}"],
        input=body,
        capture_output=True,
        timeout=30,
        check=True,
    )
    for line in sent.stdout.decode().splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "grpc-status":
            return value.strip()
    return ""


def mails_to(
    mesh: Mesh, address: str, count: int, seconds: float = 15.0, subject: str | None = None
) -> list[StoredMail]:
    """Every mail to address (with exactly that subject, when given) in the mesh's mailbox,
    oldest first, once there are at least `count` of them or `seconds` have passed (whichever
    comes first: check the length)."""
    wanted = address.strip().lower()
    seen: dict[Path, StoredMail] = {}
    deadline = time.monotonic() + seconds
    while True:
        for path in stored_mails(mesh.mailbox_dir):
            if path not in seen:
                seen[path] = read_mail(path)
        found = [
            mail
            for mail in seen.values()
            if wanted in mail.recipients()
            and (subject is None or str(mail.message["Subject"]) == subject)
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def link_token(mail: StoredMail, path: str) -> str:
    """The token in the fragment (#token=...) of the mail's one link to the page at path."""
    [link] = [link for link in mail.links() if urlsplit(link).path == path]
    fragment = urlsplit(link).fragment
    assert fragment.startswith("token="), link
    return fragment.removeprefix("token=")


@contextlib.contextmanager
def own_mesh(
    database_url: str,
    state: Path,
    env: Mapping[str, str],
    replicas: Mapping[str, int] = {},
    *,
    mtls: bool = True,
) -> Iterator[Mesh]:
    """Run a test module's own mesh over database_url on free ports, its files under state:
    the suite's cheap password hashing, no mail sending (the session mesh delivers the shared
    database's mail), blobs in state/blobs, mutual TLS inside unless mtls is false, plus env;
    stop it on leaving."""
    mesh = Mesh(
        database_url=database_url,
        ports=free_ports(replicas),
        state_dir=state,
        extra_env={
            "MESHGRAM_ENV": "development",
            "AUTH_BCRYPT_ROUNDS": "4",
            "AUTH_MAIL_SENDING": "false",
            "STORAGE_BLOB_DIR": str(state / "blobs"),
            **env,
        },
        log_dir=state / "logs",
        replicas=dict(replicas),
        mtls=mtls,
    )
    mesh.start(timeout=90)
    try:
        yield mesh
    finally:
        mesh.stop()


def free_ports(replicas: Mapping[str, int]) -> MeshPorts:
    """Free loopback ports for a mesh with these replicas (MeshPorts.free_for)."""
    return MeshPorts.free_for(replicas)
