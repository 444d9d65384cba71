"""Per-RPC metrics: every call a service takes is counted by method and final code, timed, and
shown in flight while it runs; a served process exposes them on its /metrics endpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from meshkit import errors
from meshkit import server as meshkit_server
from meshkit.metrics import registry_with
from meshkit.reasons import Reason
from meshkit.rpc_metrics import RpcCollector, RpcMetrics, split_method
from meshkit.server import RunningServer, ServiceDefinition, serve, start_server
from meshkit.settings import ServiceSettings
from tests.helpers import free_port

SERVICE = "test.v1.Figures"


class Handlers:
    """A tiny service of raw-bytes methods, one per outcome, with hooks into a held call."""

    def __init__(self) -> None:
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.stream_ended = asyncio.Event()

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        """Answer the request's bytes."""
        return request

    async def missing(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        """Fail as a client's mistake: NOT_FOUND."""
        raise errors.NotFound(message="no such thing", reason=Reason.PROFILE_NOT_FOUND)

    async def crash(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        """Fail as a bug: INTERNAL."""
        raise RuntimeError("bug")

    async def hold(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        """Wait for release before answering."""
        self.held.set()
        await self.release.wait()
        return b"released"

    async def count(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        """Stream three messages, then fail with INVALID_ARGUMENT when asked to."""
        for n in range(3):
            yield str(n).encode()
        if request == b"fail":
            raise errors.InvalidArgument(message="asked to fail")

    async def forever(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        """Stream one message, then nothing until the client gives up."""
        try:
            yield b"first"
            await asyncio.Event().wait()
        finally:
            self.stream_ended.set()

    def register(self, server: grpc.aio.Server) -> None:
        """Add the methods to server."""
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
                        "Missing": grpc.unary_unary_rpc_method_handler(self.missing),
                        "Crash": grpc.unary_unary_rpc_method_handler(self.crash),
                        "Hold": grpc.unary_unary_rpc_method_handler(self.hold),
                        "Count": grpc.unary_stream_rpc_method_handler(self.count),
                        "Forever": grpc.unary_stream_rpc_method_handler(self.forever),
                    },
                )
            ]
        )


async def always_ready() -> bool:
    """The readiness probe of a service without dependencies."""
    return True


def definition(handlers: Handlers) -> ServiceDefinition:
    """The test service as a process would host it."""
    return ServiceDefinition(
        name="figures",
        register=handlers.register,
        service_names=[SERVICE],
        reflection_names=[],
        check_ready=always_ready,
    )


@pytest.fixture
def handlers() -> Handlers:
    """Fresh handlers for a test."""
    return Handlers()


@pytest.fixture
async def running(handlers: Handlers) -> AsyncIterator[RunningServer]:
    """The test service served in-process on a free loopback port."""
    server = await start_server(definition(handlers), "127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop(0)


@pytest.fixture
async def channel(running: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the served test service."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as opened:
        yield opened


def unary(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A stub of a unary method of the test service, raw bytes in and out."""
    return channel.unary_unary(f"/{SERVICE}/{method}")


def streaming(
    channel: grpc.aio.Channel, method: str
) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
    """A stub of a server-streaming method of the test service, raw bytes in and out."""
    return channel.unary_stream(f"/{SERVICE}/{method}")


def registry(running: RunningServer) -> CollectorRegistry:
    """A registry exposing the server's per-RPC figures, as the process's /metrics does."""
    return registry_with([RpcCollector(running.rpc_metrics)])


def calls(reg: CollectorRegistry, method: str, code: str) -> float:
    """meshgram_rpc_calls_total of one method of the test service and code (0 when absent)."""
    value = reg.get_sample_value(
        "meshgram_rpc_calls_total", {"service": SERVICE, "method": method, "code": code}
    )
    return value or 0.0


def observed(reg: CollectorRegistry, method: str) -> float:
    """How many calls of a method the latency histogram holds."""
    value = reg.get_sample_value(
        "meshgram_rpc_duration_seconds_count", {"service": SERVICE, "method": method}
    )
    return value or 0.0


def in_flight(reg: CollectorRegistry, method: str) -> float:
    """meshgram_rpc_in_flight of one method of the test service."""
    value = reg.get_sample_value("meshgram_rpc_in_flight", {"service": SERVICE, "method": method})
    return value or 0.0


async def test_unary_calls_are_counted_by_method_and_final_code(
    running: RunningServer, channel: grpc.aio.Channel
) -> None:
    echo = unary(channel, "Echo")
    for _ in range(3):
        assert await echo(b"hi") == b"hi"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await unary(channel, "Missing")(b"")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as crashed:
        await unary(channel, "Crash")(b"")
    assert crashed.value.code() == grpc.StatusCode.INTERNAL

    reg = registry(running)
    assert calls(reg, "Echo", "OK") == 3
    assert calls(reg, "Echo", "NOT_FOUND") == 0
    assert calls(reg, "Missing", "NOT_FOUND") == 1
    assert calls(reg, "Missing", "OK") == 0
    assert calls(reg, "Crash", "INTERNAL") == 1
    # Every call, failed or not, is timed once.
    assert observed(reg, "Echo") == 3
    assert observed(reg, "Missing") == 1
    assert observed(reg, "Crash") == 1


async def test_streams_count_once_when_they_end_with_their_final_code(
    running: RunningServer, channel: grpc.aio.Channel
) -> None:
    count = streaming(channel, "Count")
    assert [message async for message in count(b"")] == [b"0", b"1", b"2"]
    failing = count(b"fail")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        async for _ in failing:
            pass
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    reg = registry(running)
    assert calls(reg, "Count", "OK") == 1
    assert calls(reg, "Count", "INVALID_ARGUMENT") == 1
    assert observed(reg, "Count") == 2


async def test_a_stream_the_client_cancels_counts_as_cancelled(
    running: RunningServer, channel: grpc.aio.Channel, handlers: Handlers
) -> None:
    stream = streaming(channel, "Forever")(b"")
    assert await stream.read() == b"first"
    assert in_flight(registry(running), "Forever") == 1
    stream.cancel()
    # The interceptor counts the call in the same step as the handler's own cleanup.
    await handlers.stream_ended.wait()

    reg = registry(running)
    assert calls(reg, "Forever", "CANCELLED") == 1
    assert in_flight(reg, "Forever") == 0


async def test_a_running_call_is_in_flight_until_it_ends(
    running: RunningServer, channel: grpc.aio.Channel, handlers: Handlers
) -> None:
    call = unary(channel, "Hold")(b"")
    await handlers.held.wait()
    reg = registry(running)
    assert in_flight(reg, "Hold") == 1
    assert calls(reg, "Hold", "OK") == 0

    handlers.release.set()
    assert await call == b"released"
    reg = registry(running)
    assert in_flight(reg, "Hold") == 0
    assert calls(reg, "Hold", "OK") == 1


def test_latencies_fall_in_the_bucket_of_their_upper_bound() -> None:
    metrics = RpcMetrics()
    for seconds in (0.0002, 0.001, 0.003, 0.75, 42.0):
        metrics.started(f"/{SERVICE}/Echo").finished(grpc.StatusCode.OK, seconds)
    reg = registry_with([RpcCollector(metrics)])

    def bucket(le: str) -> float | None:
        """The cumulative count of one bucket of the Echo histogram."""
        return reg.get_sample_value(
            "meshgram_rpc_duration_seconds_bucket",
            {"service": SERVICE, "method": "Echo", "le": le},
        )

    assert bucket("0.0005") == 1
    # A bound is inclusive: 1 ms lands in the 1 ms bucket.
    assert bucket("0.001") == 2
    assert bucket("0.0025") == 2
    assert bucket("0.005") == 3
    assert bucket("0.5") == 3
    assert bucket("1") == 4
    # Beyond the last bound (10 s) a call only shows in +Inf.
    assert bucket("10") == 4
    assert bucket("+Inf") == 5
    total = reg.get_sample_value(
        "meshgram_rpc_duration_seconds_sum", {"service": SERVICE, "method": "Echo"}
    )
    assert total == pytest.approx(0.0002 + 0.001 + 0.003 + 0.75 + 42.0)


def test_method_names_split_into_service_and_method() -> None:
    assert split_method("/meshgram.auth.v1.AuthService/Login") == (
        "meshgram.auth.v1.AuthService",
        "Login",
    )
    assert split_method("odd") == ("", "odd")


async def test_a_served_process_exposes_its_calls_on_its_metrics_port(
    handlers: Handlers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve() would route the whole test run's logging to JSON on stderr.
    monkeypatch.setattr(meshkit_server, "configure_logging", lambda *_: None)
    port, metrics_port = free_port(), free_port()
    settings = ServiceSettings(
        host="127.0.0.1", port=port, metrics_port=metrics_port, shutdown_grace_seconds=1
    )
    served = definition(handlers)
    served.jobs.figures("tidy-up").rounds = 3
    serving = asyncio.create_task(serve(served, settings))
    try:
        text = await asyncio.to_thread(scrape_when_up, f"http://127.0.0.1:{metrics_port}/metrics")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await unary(channel, "Echo")(b"x") == b"x"
        text = await asyncio.to_thread(scrape_when_up, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        # serve() installs its SIGTERM handler before its metrics endpoint can answer; without
        # it, the signal would end the test run.
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGTERM)
            await serving
        else:
            serving.cancel()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    ok = (("code", "OK"), ("method", "Echo"), ("service", SERVICE))
    assert samples[("meshgram_rpc_calls_total", ok)] == 1
    # The background jobs of the process are shown beside its calls.
    tidy_ok = (("job", "tidy-up"), ("outcome", "ok"))
    assert samples[("meshgram_job_rounds_total", tidy_ok)] == 3


def scrape_when_up(url: str) -> str:
    """The body of url once its server answers (a few seconds at most)."""
    for _ in range(200):
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                body: bytes = response.read()
                return body.decode()
        except OSError:
            # Not listening yet: try again shortly.
            time.sleep(0.02)
    raise AssertionError(f"{url} never answered")
