"""Fuzzed requests through the edge: the example budgets, the account whose token calls carry,
how a call is sent (native gRPC, gRPC-web), how its answer is judged, and the counts per RPC,
protocol and status."""

from __future__ import annotations

import asyncio
import binascii
import os
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import grpc
import httpx
from google.api import httpbody_pb2
from hypothesis import HealthCheck, settings, target

from meshgram.auth.v1 import auth_pb2, auth_pb2_grpc
from meshgram.storage.v1 import storage_pb2, storage_pb2_grpc
from tests.e2e.fuzz.strategies import TOKEN, Hints, PublicMethod, WebRequest
from tests.e2e.support import grpc_web_text_decode, grpc_web_unframe, new_user, png_bytes

# The deadline every fuzzed call carries. Every request here is answered in milliseconds; the
# margin is for a loaded 2-core machine, and stays under the edge's own 15 s route limit.
CALL_TIMEOUT_SECONDS = 10.0
# How long past its deadline the client itself waits: a call still open then has hung.
_BACKSTOP_SECONDS = 5.0

# Answers meaning that a service broke, or was not there to answer.
FAILING_CODES = frozenset({"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNAVAILABLE", "DEADLINE_EXCEEDED"})
TIMED_OUT = "TIMED_OUT"
"""Status of a call still unanswered at its deadline plus the client's backstop."""
CONNECTION_LOST = "CONNECTION_LOST"
"""Status of a gRPC-web call whose connection closed before any answer arrived."""
# How a grpc client reports an answer whose metadata passed its limit (16 KiB, randomly from
# 8 KiB): the answer never reached it, whatever status it carried.
_OVERSIZED_ANSWER = "received metadata size exceeds"
# What the edge reads of a request before it stops reading (per_connection_buffer_limit_bytes).
_EDGE_BUFFER_BYTES = 1024 * 1024

PROFILE_VARIABLE = "MESHGRAM_FUZZ_PROFILE"
_PROFILES = {
    # In `make test`: few examples per RPC and protocol, the same ones every run.
    "ci": settings(max_examples=15, derandomize=True),
    # `make fuzz`: many more, new ones every run (a failure prints how to replay it).
    "long": settings(max_examples=500, derandomize=False),
}
for _name, _budget in _PROFILES.items():
    settings.register_profile(
        f"meshgram-fuzz-{_name}",
        parent=_budget,
        # Examples are network calls: per-example deadlines and speed checks would misfire.
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
        # Nothing is written into the working tree; failures print how to replay them.
        database=None,
        print_blob=True,
    )

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
_CODE_ORDER = {code.name: code.value[0] for code in grpc.StatusCode}
# An access token lives 15 minutes; a long run logs in again well before that.
_RENEW_TOKEN_AFTER_SECONDS = 600.0


def profile_name() -> str:
    """The example budget chosen by MESHGRAM_FUZZ_PROFILE ("ci" unless set)."""
    name = os.environ.get(PROFILE_VARIABLE, "ci")
    if name not in _PROFILES:
        raise ValueError(f"{PROFILE_VARIABLE}={name!r}; expected one of {', '.join(_PROFILES)}")
    return name


def fuzz_settings() -> settings:
    """The hypothesis settings of the chosen profile."""
    return settings.get_profile(f"meshgram-fuzz-{profile_name()}")


@dataclass(frozen=True)
class Outcome:
    """How one call ended, as the client saw it."""

    status: str
    """Canonical gRPC code name, TIMED_OUT or CONNECTION_LOST."""
    message: str
    seconds: float
    request_bytes: int
    http_status: int | None = None
    """The HTTP status of a gRPC-web reply."""

    def defect(self) -> str | None:
        """Why this answer is a defect, or None when it is a deliberate one."""
        if self.status == TIMED_OUT:
            return f"no answer within {CALL_TIMEOUT_SECONDS + _BACKSTOP_SECONDS:g} s"
        if self.status == CONNECTION_LOST:
            return "the connection closed before an answer"
        if _OVERSIZED_ANSWER in self.message:
            return "the answer's metadata was too large for the client"
        if self.status in FAILING_CODES:
            return f"answered {self.status}"
        if self.http_status is not None and self.http_status >= 500:
            return f"answered HTTP {self.http_status}"
        if self.seconds > CALL_TIMEOUT_SECONDS:
            return (
                f"answered after {self.seconds:.1f} s, past its {CALL_TIMEOUT_SECONDS:g} s deadline"
            )
        return None

    @property
    def known_issue(self) -> KnownIssue | None:
        """The known issue behind this answer's defect, if any."""
        if self.defect() is None:
            return None
        return next((issue for issue in KNOWN_ISSUES if issue.matches(self)), None)

    def failure(self) -> str | None:
        """The defect of this answer unless a known issue explains it."""
        return None if self.known_issue is not None else self.defect()

    def __str__(self) -> str:
        http = f" (HTTP {self.http_status})" if self.http_status is not None else ""
        return f"{self.status}{http} after {self.seconds:.2f} s: {self.message[:300]!r}"


@dataclass(frozen=True)
class KnownIssue:
    """A defect fuzzing found whose cause is known and not fixed here. Its answers are counted
    under a starred status and fail no fuzz test; `reference` is its strict-xfail regression test
    (which fails once the issue is fixed, and then this entry goes) or the upstream report."""

    summary: str
    reference: str
    matches: Callable[[Outcome], bool]


KNOWN_ISSUES = (
    KnownIssue(
        summary="an upload chunk flagged compressed without grpc-encoding: INTERNAL from grpcio",
        reference="test_fuzz_regressions.py::test_a_message_flagged_compressed_*[client-streaming]",
        matches=lambda outcome: (
            outcome.status == "INTERNAL"
            and outcome.message == "Compression bit set but no encoding configured"
        ),
    ),
    KnownIssue(
        summary="an HTTP/1.1 request still sending when the answer comes loses it to a TCP reset",
        reference="test_fuzz_regressions.py::test_an_early_answer_reaches_an_http1_client",
        matches=lambda outcome: (
            outcome.status == CONNECTION_LOST and outcome.request_bytes > _EDGE_BUFFER_BYTES
        ),
    ),
    KnownIssue(
        summary="grpc.aio replaces the status of a call that ends during a write (client side)",
        reference="https://github.com/grpc/grpc/issues/36066",
        matches=lambda outcome: (
            outcome.status == "INTERNAL" and outcome.message == "Internal error from Core"
        ),
    ),
)


class Account:
    """A registered user with a stored image: the source of hints and of the bearer token that
    half of the fuzzed calls carry."""

    def __init__(self, channel: grpc.aio.Channel, login: auth_pb2.LoginRequest, hints: Hints):
        self._auth = auth_pb2_grpc.AuthServiceStub(channel)
        self._login = login
        self.hints = hints
        self._token = ""
        self._issued = float("-inf")

    @classmethod
    async def open(cls, channel: grpc.aio.Channel) -> Account:
        """Register a fresh user, upload an image as them, and gather the real values."""
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        user = new_user()
        await auth.Register(
            auth_pb2.RegisterRequest(
                email=user.email, username=user.username, password=user.password
            )
        )
        login = auth_pb2.LoginRequest(email=user.email, password=user.password)
        tokens = (await auth.Login(login)).tokens
        image = png_bytes(48, 32)
        storage = storage_pb2_grpc.StorageServiceStub(channel)
        uploaded = await storage.UploadImage(
            iter([storage_pb2.UploadImageRequest(body=httpbody_pb2.HttpBody(data=image))]),
            metadata=(("authorization", f"Bearer {tokens.access_token}"),),
        )
        image_id = uploaded.image.id
        hints = Hints(
            strings=(
                user.username,
                user.username.upper(),
                user.email,
                user.password,
                image_id,
                image_id.upper(),
                uuid.UUID(image_id).hex,
                f"urn:uuid:{image_id}",
                str(uuid.uuid4()),
                tokens.refresh_token,
            ),
            blobs=(image, image[: len(image) // 2], png_bytes(300, 200, "navy")),
        )
        return cls(channel, login, hints)

    async def authorization(self, drawn: str | None) -> str | None:
        """The header value a drawn authorization stands for, the real token filled in."""
        if drawn is None or TOKEN not in drawn:
            return drawn
        if time.monotonic() - self._issued > _RENEW_TOKEN_AFTER_SECONDS:
            self._token = (await self._auth.Login(self._login)).tokens.access_token
            self._issued = time.monotonic()
        return drawn.replace(TOKEN, self._token)


def steer(outcome: Outcome) -> None:
    """Point hypothesis at requests whose answers grow with them: an error that echoes its
    request can outgrow what the edge and clients accept. (Not at slow answers: climbing
    towards them costs seconds per example, and a missed deadline fails anyway.)"""
    target(float(len(outcome.message)), label="answer message length")


def _same(data: bytes) -> bytes:
    """Bytes pass as they are: the fuzzer serializes requests itself."""
    return data


def _native_call(
    channel: grpc.aio.Channel,
    method: PublicMethod,
    stream: Sequence[bytes],
    metadata: tuple[tuple[str, str], ...] | None,
) -> Any:
    """Start the call: as the method's stub would for one request of a unary method, as a
    request stream otherwise (none, or several to a unary method)."""
    codecs: dict[str, Callable[[bytes], bytes]] = {
        "request_serializer": _same,
        "response_deserializer": _same,
    }
    if len(stream) == 1 and not method.client_streaming:
        single = channel.unary_stream if method.server_streaming else channel.unary_unary
        return single(method.path, **codecs)(
            stream[0], timeout=CALL_TIMEOUT_SECONDS, metadata=metadata
        )
    several = channel.stream_stream if method.server_streaming else channel.stream_unary
    return several(method.path, **codecs)(
        iter(stream), timeout=CALL_TIMEOUT_SECONDS, metadata=metadata
    )


async def call_native(
    channel: grpc.aio.Channel,
    method: PublicMethod,
    stream: Sequence[bytes],
    authorization: str | None,
) -> Outcome:
    """Send a request stream over native gRPC and read the whole answer."""
    metadata = (("authorization", authorization),) if authorization is not None else None
    size = sum(map(len, stream))
    started = time.monotonic()
    call = _native_call(channel, method, stream, metadata)
    try:
        async with asyncio.timeout(CALL_TIMEOUT_SECONDS + _BACKSTOP_SECONDS):
            try:
                if method.server_streaming:
                    async for _ in call:
                        pass
                else:
                    await call
            except grpc.aio.AioRpcError:
                pass  # the status is read below, whatever it is
            code, details = await call.code(), await call.details()
    except TimeoutError:
        call.cancel()
        return Outcome(TIMED_OUT, "the call hung", time.monotonic() - started, size)
    return Outcome(code.name, details or "", time.monotonic() - started, size)


def web_protocol(request: WebRequest) -> str:
    """The protocol label of a gRPC-web request: grpc-web or grpc-web-text."""
    return "grpc-web-text" if request.content_type.endswith("-text") else "grpc-web"


async def call_web(
    http: httpx.AsyncClient, method: PublicMethod, request: WebRequest, authorization: str | None
) -> Outcome:
    """POST a gRPC-web request as a browser would and read the status from the reply."""
    headers = {
        "content-type": request.content_type,
        "accept": request.content_type,
        "x-grpc-web": "1",
        "grpc-timeout": f"{CALL_TIMEOUT_SECONDS:.0f}S",
    }
    if authorization is not None:
        headers["authorization"] = authorization
    size = len(request.body)
    started = time.monotonic()
    try:
        reply = await http.post(
            method.path,
            content=request.body,
            headers=headers,
            timeout=CALL_TIMEOUT_SECONDS + _BACKSTOP_SECONDS,
        )
    except httpx.TimeoutException:
        return Outcome(TIMED_OUT, "the request hung", time.monotonic() - started, size)
    except httpx.TransportError as exc:
        return Outcome(CONNECTION_LOST, repr(exc), time.monotonic() - started, size)
    status, message = web_status(reply)
    return Outcome(status, message, time.monotonic() - started, size, reply.status_code)


def web_status(reply: httpx.Response) -> tuple[str, str]:
    """The gRPC status and message of a gRPC-web reply, from its headers (a trailers-only
    answer) or its trailer frame; UNKNOWN, as a gRPC-web client reports it, when it has none."""
    fields: dict[str, str] = dict(reply.headers)
    if "grpc-status" not in fields:
        try:
            body = reply.content
            if reply.headers.get("content-type", "").startswith("application/grpc-web-text"):
                body = grpc_web_text_decode(body)
            fields = grpc_web_unframe(body)[1]
        except (binascii.Error, struct.error, UnicodeDecodeError) as exc:
            return "UNKNOWN", f"unreadable gRPC-web body ({exc}): {reply.content[:200]!r}"
    raw = fields.get("grpc-status")
    if raw is None:
        return "UNKNOWN", f"no grpc-status: {reply.content[:200]!r}"
    code = _CODE_NAMES.get(int(raw)) if raw.isdigit() else None
    message = unquote(fields.get("grpc-message", ""))
    if code is None:
        return "UNKNOWN", f"grpc-status {raw!r} is no gRPC code; {message}"
    return code, message


class Tally:
    """Calls per RPC, protocol and status, for the table at the end of a run."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def add(self, method: PublicMethod, protocol: str, outcome: Outcome) -> None:
        """Count one call; the answers of known issue n count as status*n."""
        status = outcome.status
        if outcome.known_issue is not None:
            status += f"*{KNOWN_ISSUES.index(outcome.known_issue) + 1}"
        self._counts[method.name, protocol, status] += 1

    def __bool__(self) -> bool:
        return bool(self._counts)

    def table(self) -> list[str]:
        """One row per RPC and protocol, one column per status seen, a total row last."""
        statuses = sorted(
            {status for _, _, status in self._counts},
            key=lambda s: (_CODE_ORDER.get(s.partition("*")[0], 99), s),
        )
        rows: dict[tuple[str, str], Counter[str]] = {}
        for (rpc, protocol, status), count in self._counts.items():
            rows.setdefault((rpc, protocol), Counter())[status] += count
        totals: Counter[str] = sum(rows.values(), Counter())
        header = ["RPC", "protocol", "calls", *statuses]
        body = [
            [rpc, protocol, str(counts.total()), *(str(counts[s] or "-") for s in statuses)]
            for (rpc, protocol), counts in sorted(rows.items())
        ]
        body.append(["total", "", str(totals.total()), *(str(totals[s]) for s in statuses)])
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        return [
            "  ".join(
                cell.ljust(width) if i < 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in [header, *body]
        ] + [
            f"*{number}: known issue: {issue.summary} ({issue.reference})"
            for number, issue in enumerate(KNOWN_ISSUES, start=1)
            if any(status.endswith(f"*{number}") for status in statuses)
        ]
