"""Composition helpers shared by every service: start a grpc.aio server with health, reflection,
the service interceptor and a readiness probe; drain gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client.registry import Collector

from meshkit import reflection as meshkit_reflection
from meshkit.background import Jobs
from meshkit.interceptors import ServiceInterceptor
from meshkit.logs import configure_logging
from meshkit.mesh_tls import MeshTls
from meshkit.metrics import JobsCollector, serve_metrics
from meshkit.rpc_metrics import RpcCollector, RpcMetrics
from meshkit.settings import ServiceSettings
from meshkit.tracing import configure_tracing, server_interceptors

log = logging.getLogger("meshkit.server")

# Requests of most RPCs are a few hundred bytes: a small receive limit makes grpc refuse
# oversized ones (RESOURCE_EXHAUSTED) before any of our code, or protobuf parsing, sees them.
# It sits above the edge's 64 KiB JSON body limit, so REST clients get 413 or a field error
# rather than a RESOURCE_EXHAUSTED that REST would show as 429.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
_MAX_SEND_MESSAGE_BYTES = 16 * 1024 * 1024
# Request metadata a service accepts: above the 60 KiB the edge's codec can forward at all (plus
# what the edge adds), with the soft and hard limits equal. So only the edge refuses oversized
# headers, and whatever it forwards is judged by the service (a long garbage token is
# UNAUTHENTICATED). Between grpc's default 8 KiB soft and 16 KiB hard limit the answer was
# random: sometimes RESOURCE_EXHAUSTED with internal header names in the message.
MAX_METADATA_BYTES = 128 * 1024


@dataclass
class ServiceDefinition:
    """Everything the server needs to host one service process."""

    name: str
    """Process name used in logs, e.g. "auth_svc"."""
    register: Callable[[grpc.aio.Server], None]
    """Adds the servicers to the server."""
    service_names: Sequence[str]
    """Full names of the services implemented here; their health follows the readiness probe."""
    reflection_names: Sequence[str]
    """Full names listed by server reflection (may include peers' public services)."""
    check_ready: Callable[[], Awaitable[bool]]
    """Returns True while the process can answer calls; drives the health status.

    Only what every call needs belongs here. A dependency that some RPCs need (data_access for
    profiles, but not for the JWKS) must stay out: those RPCs answer UNAVAILABLE by themselves,
    while a NOT_SERVING status would make the edge refuse every RPC of the service."""
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    """Extra server interceptors, run after the shared ServiceInterceptor."""
    on_startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Run before the server takes its first call (opening clients that need the event loop)."""
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_drained: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Run once no new calls arrive, before in-flight ones get their grace: ends long-lived
    streams, which would otherwise hold the whole grace period."""
    collectors: Sequence[Collector] = ()
    """Prometheus collectors of this service's own figures (process figures are always in)."""
    jobs: Jobs = field(default_factory=Jobs)
    """The service's repeated background jobs, whose rounds the metrics show."""
    """Closers run after the server has drained (channels, engines)."""
    health_interval_seconds: float = 2.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """Largest request message accepted; bigger ones fail with RESOURCE_EXHAUSTED."""


@dataclass
class RunningServer:
    """A started server: its bound port and how to stop it."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    definition: ServiceDefinition
    _probe: asyncio.Task[None]
    rpc_metrics: RpcMetrics
    """Per-RPC figures of every call this server takes."""

    async def stop(self, grace: float, drain: float = 0.0) -> None:
        """Report NOT_SERVING, keep serving for drain seconds so load balancers notice, let
        in-flight calls finish within grace seconds, then close."""
        await self.health.enter_graceful_shutdown()
        self._probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._probe
        if drain > 0:
            # Envoy only stops sending new calls after its next failed health checks.
            await asyncio.sleep(drain)
        for closer in self.definition.on_drained:
            await closer()
        await self.server.stop(grace)
        for closer in self.definition.on_shutdown:
            await closer()


async def start_server(
    definition: ServiceDefinition, host: str, port: int, tls: MeshTls | None = None
) -> RunningServer:
    """Start serving definition on host:port (0 picks a free port) and return the handle; with
    tls, only to mutual-TLS clients holding a certificate from its CA (no plaintext port)."""
    options = [
        ("grpc.max_receive_message_length", definition.max_message_bytes),
        ("grpc.max_send_message_length", _MAX_SEND_MESSAGE_BYTES),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.so_reuseport", 0),
    ]
    rpc_metrics = RpcMetrics()
    server = grpc.aio.server(
        interceptors=[
            # Tracing first, so the service interceptor's log lines fall inside the call's span.
            *server_interceptors(),
            ServiceInterceptor(metrics=rpc_metrics),
            *definition.interceptors,
        ],
        options=options,
    )
    for opener in definition.on_startup:
        await opener()
    definition.register(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    meshkit_reflection.enable(
        server,
        [*definition.reflection_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name],
    )
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, tls.server_credentials())
    if bound == 0:
        raise OSError(f"{definition.name}: cannot listen on {host}:{port}")
    await server.start()
    await _set_health(health, definition, await _probe_once(definition))
    probe = asyncio.create_task(_probe_forever(health, definition), name=f"{definition.name}-probe")
    log.info("listening", extra={"address": f"{host}:{bound}", "mtls": tls is not None})
    return RunningServer(
        server=server,
        port=bound,
        health=health,
        definition=definition,
        _probe=probe,
        rpc_metrics=rpc_metrics,
    )


async def serve(definition: ServiceDefinition, settings: ServiceSettings) -> None:
    """Run a service until SIGTERM or SIGINT, then drain gracefully."""
    configure_logging(definition.name, settings.log_level)
    stop_tracing = configure_tracing(definition.name)
    running = await start_server(definition, settings.host, settings.port, settings.mesh_tls())
    metrics = None
    if settings.metrics_port:
        collectors = [
            *definition.collectors,
            RpcCollector(running.rpc_metrics),
            JobsCollector(definition.jobs),
        ]
        metrics = serve_metrics(settings.host, settings.metrics_port, collectors)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info(
        "draining",
        extra={
            "drain_seconds": settings.shutdown_drain_seconds,
            "grace_seconds": settings.shutdown_grace_seconds,
        },
    )
    await running.stop(settings.shutdown_grace_seconds, settings.shutdown_drain_seconds)
    if metrics is not None:
        metrics.close()
    # Sends the spans still queued; a receiver that is gone costs at most its export timeout.
    stop_tracing()
    log.info("stopped")


async def _probe_once(definition: ServiceDefinition) -> bool:
    """Run the readiness probe, treating errors and slowness as 'not ready'."""
    try:
        return await asyncio.wait_for(
            definition.check_ready(), timeout=definition.health_interval_seconds
        )
    except Exception:  # any failure of a probe means "not serving"
        return False


async def _probe_forever(health: health_aio.HealthServicer, definition: ServiceDefinition) -> None:
    """Keep the health status in line with the readiness probe."""
    last: bool | None = None
    while True:
        ok = await _probe_once(definition)
        if ok != last:
            await _set_health(health, definition, ok)
            if last is not None:
                log.warning("readiness %s", "regained" if ok else "lost")
            last = ok
        await asyncio.sleep(definition.health_interval_seconds)


async def _set_health(
    health: health_aio.HealthServicer, definition: ServiceDefinition, ok: bool
) -> None:
    """Set the overall ("") and per-service health status."""
    status = (
        health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *definition.service_names):
        await health.set(name, status)
