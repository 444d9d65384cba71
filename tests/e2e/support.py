"""Helpers shared by the end-to-end tests: unique users, test images, gRPC-web framing, logs."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

from PIL import Image

from tools.mesh import Mesh


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
