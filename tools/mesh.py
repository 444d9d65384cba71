"""Start and stop the whole mesh as local processes: data_access, the three public services and
the Envoy edge. Used by `make run` / `make dev` (tools/run.py) and by the end-to-end tests."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2

from meshkit.caller import derive_caller_token
from meshkit.peers import health_check
from tools.edge import EdgeConfig, write

ROOT = Path(__file__).resolve().parent.parent
ENVOY_BIN = Path(sys.executable).parent / "envoy"

SERVICES = ("data_access", "auth_svc", "user_svc", "storage_svc")
# Env prefix of each service's settings.
PREFIX = {
    "data_access": "DATA_ACCESS_",
    "auth_svc": "AUTH_",
    "user_svc": "USER_",
    "storage_svc": "STORAGE_",
}


@dataclass(frozen=True)
class MeshPorts:
    """Where every process listens; all on loopback."""

    edge: int = 8080
    admin: int = 9901
    auth_svc: int = 50051
    user_svc: int = 50052
    storage_svc: int = 50053
    data_access: int = 50060

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MeshPorts:
        """Ports from EDGE_PORT, EDGE_ADMIN_PORT and <PREFIX>PORT, defaults otherwise."""
        base = cls()
        return cls(
            edge=int(env.get("EDGE_PORT", base.edge)),
            admin=int(env.get("EDGE_ADMIN_PORT", base.admin)),
            **{svc: int(env.get(f"{PREFIX[svc]}PORT", getattr(base, svc))) for svc in SERVICES},
        )

    @classmethod
    def free(cls) -> MeshPorts:
        """Pick currently free loopback ports (for tests running beside a live mesh)."""
        socks = [socket.socket() for _ in range(6)]
        try:
            for sock in socks:
                sock.bind(("127.0.0.1", 0))
            ports = [sock.getsockname()[1] for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        return cls(*ports)

    def of(self, service: str) -> int:
        """Port of a service by package name."""
        return int(getattr(self, service))


@dataclass
class Mesh:
    """A running (or startable) mesh; start() blocks until every part is healthy."""

    database_url: str
    ports: MeshPorts = field(default_factory=MeshPorts)
    state_dir: Path = ROOT / "var"
    cors_origins: tuple[str, ...] = ("http://localhost:5173", "http://127.0.0.1:5173")
    extra_env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    """When set, each process writes to <log_dir>/<name>.log instead of this terminal."""
    _mesh_secret: str | None = None
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def edge_address(self) -> str:
        """host:port of the Envoy listener."""
        return f"127.0.0.1:{self.ports.edge}"

    def start(self, timeout: float = 60.0) -> None:
        """Start data_access, the services and Envoy; raise if any is not healthy in time."""
        try:
            self.start_services(timeout)
            self._start_envoy(timeout)
        except BaseException:
            self.stop()
            raise

    def start_services(self, timeout: float = 60.0) -> None:
        """Start (or restart) the four Python services and wait until each is SERVING."""
        for service in SERVICES:
            self.start_service(service, timeout)

    def start_service(self, service: str, timeout: float = 60.0) -> None:
        """Start one Python service and wait until it reports SERVING."""
        self._spawn(service, [sys.executable, "-m", service], self._service_env(service))
        _wait_serving(f"127.0.0.1:{self.ports.of(service)}", timeout, self._procs[service])

    def stop_services(self) -> None:
        """Stop the Python services (SIGTERM, then SIGKILL after their grace period)."""
        for service in reversed(SERVICES):
            self.stop_service(service)

    def stop_service(self, service: str) -> None:
        """Stop one service gracefully (SIGTERM, SIGKILL only if it outlives its grace)."""
        self._terminate(service)

    def stop(self) -> None:
        """Stop everything this mesh started, edge first so clients see a clean refusal."""
        self._terminate("envoy")
        self.stop_services()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def _service_env(self, service: str) -> dict[str, str]:
        """Environment of one service process: its own settings and credential, nobody else's.

        Each service sees only variables with its own prefix (plus shared ones such as
        MESHGRAM_ENV); DATABASE_URL and the mesh secret reach data_access alone.
        """
        shared = {**os.environ, **self.extra_env}
        if self._mesh_secret is None:
            self._mesh_secret = shared.get("DATA_ACCESS_MESH_SECRET") or secrets.token_urlsafe(32)
        others = tuple(prefix for name, prefix in PREFIX.items() if name != service)
        env = {
            key: value
            for key, value in shared.items()
            if not key.startswith(others) and key != "DATABASE_URL"
        }
        prefix = PREFIX[service]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env[f"{prefix}PORT"] = str(self.ports.of(service))
        env.setdefault(f"{prefix}HOST", "127.0.0.1")
        if service == "data_access":
            env["DATABASE_URL"] = self.database_url
            env["DATA_ACCESS_MESH_SECRET"] = self._mesh_secret
            return env
        env[f"{prefix}DATA_ACCESS_ADDR"] = f"127.0.0.1:{self.ports.data_access}"
        env[f"{prefix}DATA_ACCESS_TOKEN"] = derive_caller_token(self._mesh_secret, service)
        if service in ("user_svc", "storage_svc"):
            env[f"{prefix}AUTH_ADDR"] = f"127.0.0.1:{self.ports.auth_svc}"
        if service == "auth_svc":
            env.setdefault(
                "AUTH_JWT_PRIVATE_KEY_FILE", str(self.state_dir / "keys" / "jwt-ed25519.pem")
            )
        if service == "storage_svc":
            env.setdefault("STORAGE_BLOB_DIR", str(self.state_dir / "blobs"))
        return env

    def _start_envoy(self, timeout: float) -> None:
        """Render the edge config, start Envoy and wait until every cluster is healthy."""
        config = EdgeConfig(
            listen_host="127.0.0.1",
            listen_port=self.ports.edge,
            admin_port=self.ports.admin,
            cors_origins=self.cors_origins,
            upstreams={
                svc: [f"127.0.0.1:{self.ports.of(svc)}"]
                for svc in ("auth_svc", "user_svc", "storage_svc")
            },
        )
        path = write(config, self.state_dir / "run" / f"envoy-{self.ports.edge}.yaml")
        command = [
            str(ENVOY_BIN),
            "-c",
            str(path),
            "--log-level",
            "warn",
            "--base-id",
            str(self.ports.edge),
            "--drain-time-s",
            "2",
            # Access-log lines reach the terminal within half a second (Envoy's default is 10 s).
            "--file-flush-interval-msec",
            "500",
        ]
        # Envoy needs none of the services' settings or secrets.
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(tuple(PREFIX.values())) and key != "DATABASE_URL"
        }
        self._spawn("envoy", command, env)
        _wait_edge_healthy(self.ports.admin, timeout, self._procs["envoy"])

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        """Start one child process, logging to this terminal or to log_dir."""
        out: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = (self.log_dir / f"{name}.log").open("ab")
            self._logs.append(out)
        self._procs[name] = subprocess.Popen(  # noqa: S603 - fixed commands, no user input
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT if out else None
        )

    def _terminate(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM one child and wait; SIGKILL it if it outlives the grace period."""
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_serving(address: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Poll the gRPC health service at address until it answers SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        check = health_check(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"process for {address} exited with {proc.returncode}")
            try:
                reply = check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{address} not SERVING after {timeout:.0f}s")


def _wait_edge_healthy(admin_port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Poll Envoy's admin until it is ready and every upstream cluster has a healthy host."""
    deadline = time.monotonic() + timeout
    clusters = ("auth_svc", "user_svc", "storage_svc")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/clusters", timeout=1) as r:
                text = r.read().decode()
            healthy = {
                line.split("::", 1)[0]
                for line in text.splitlines()
                if "::health_flags::healthy" in line
            }
            if all(name in healthy for name in clusters):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"edge clusters not healthy after {timeout:.0f}s")
