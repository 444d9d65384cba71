"""Start and stop the whole mesh as local processes: data_access, the three public services, the
Envoy edge and the development mailbox (tools/mailbox.py, where auth_svc's mail lands), each
restarted by a tools.supervisor.Supervisor when it exits unexpectedly.
Used by `make run` / `make dev` (tools/run.py) and by the end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from meshkit.caller import CALLER_HEADER, CALLER_TOKEN_HEADER, derive_caller_token
from meshkit.clients import open_channel
from meshkit.mesh_tls import MeshTls, spiffe_id
from meshkit.peers import health_check
from meshkit.rate_limits import parse_limits
from tools import edge_tls
from tools.dev_certs import CertFiles, ensure_workload_certificate
from tools.dev_secrets import stored_secret
from tools.edge import EdgeConfig, UpstreamTls, write
from tools.edge_hosts import domain_from_env, host_urls
from tools.edge_jwt import edge_jwt_from_env
from tools.edge_tls import DownstreamTls
from tools.edge_tracing import edge_tracing
from tools.s3_dev_server import DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY
from tools.supervisor import ChildSpec, Supervisor

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
# Services the edge balances over. Every service may run several replicas: the edge balances
# over the public ones, the services' gRPC channels round-robin over data_access's.
PUBLIC = ("auth_svc", "user_svc", "storage_svc")
# Replica i of a service listens on its base port + REPLICA_PORT_STEP * i, and serves metrics
# on that port + METRICS_PORT_OFFSET.
REPLICA_PORT_STEP = 100
METRICS_PORT_OFFSET = 1000
MESH_SECRET_FILE = "mesh-secret"
PASSWORD_PEPPER_FILE = "password-pepper"
MEDIA_URL_KEY_FILE = "media-url-key"
# The id under which the generated media URL key signs (storage_svc/media_urls.py).
MEDIA_URL_KEY_ID = "dev"
MAILBOX = "mailbox"
S3_SERVER = "s3"
# The local S3 server listens this far above storage_svc's port.
S3_PORT_OFFSET = 900


@dataclass(frozen=True)
class MeshPorts:
    """Where every process listens; all on loopback."""

    edge: int = 8080
    admin: int = 9901
    auth_svc: int = 50051
    user_svc: int = 50052
    storage_svc: int = 50053
    data_access: int = 50060
    mailbox: int = 8025
    """SMTP port of the development mailbox."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MeshPorts:
        """Ports from EDGE_PORT, EDGE_ADMIN_PORT, <PREFIX>PORT and MAILBOX_PORT, defaults
        otherwise."""
        base = cls()
        return cls(
            edge=int(env.get("EDGE_PORT", base.edge)),
            admin=int(env.get("EDGE_ADMIN_PORT", base.admin)),
            mailbox=int(env.get("MAILBOX_PORT", base.mailbox)),
            **{svc: int(env.get(f"{PREFIX[svc]}PORT", getattr(base, svc))) for svc in SERVICES},
        )

    @classmethod
    def free(cls) -> MeshPorts:
        """Pick currently free loopback ports (for tests running beside a live mesh)."""
        socks = [socket.socket() for _ in range(len(fields(cls)))]
        try:
            for sock in socks:
                sock.bind(("127.0.0.1", 0))
            ports = [sock.getsockname()[1] for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        return cls(*ports)

    @classmethod
    def free_for(cls, replicas: Mapping[str, int]) -> MeshPorts:
        """Free base ports whose every replica and metrics port (base + 100 i, + 1000) is free
        too, for a mesh with that many replicas of each service (1 when not named)."""
        for _ in range(100):
            ports = cls.free()
            wanted = [ports.edge, ports.admin]
            for service in SERVICES:
                for replica in range(replicas.get(service, 1)):
                    wanted += [ports.of(service, replica), ports.metrics(service, replica)]
            if len(set(wanted)) == len(wanted) and all(_port_is_free(port) for port in wanted):
                return ports
        raise RuntimeError("found no free set of loopback ports for the mesh")

    def of(self, service: str, replica: int = 0) -> int:
        """gRPC port of a service (replica 0 unless told) by package name."""
        return int(getattr(self, service)) + REPLICA_PORT_STEP * replica

    def metrics(self, service: str, replica: int = 0) -> int:
        """Prometheus port of one replica of a service."""
        return self.of(service, replica) + METRICS_PORT_OFFSET


def _port_is_free(port: int) -> bool:
    """Whether a loopback TCP port can be bound now."""
    if port > 65_535:
        return False
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def mtls_from_env(env: Mapping[str, str]) -> bool:
    """Whether every internal hop uses mutual TLS: MESH_MTLS, on unless 0/false/no/off."""
    value = env.get("MESH_MTLS", "1").strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("MESH_MTLS must be 1 (mutual TLS inside the mesh, the default) or 0")


def replicas_from_env(env: Mapping[str, str]) -> dict[str, int]:
    """Replica counts of the services from <PREFIX>REPLICAS (default 1 each)."""
    raw = {
        "data_access": env.get("DATA_ACCESS_REPLICAS", "1"),
        "auth_svc": env.get("AUTH_REPLICAS", "1"),
        "user_svc": env.get("USER_REPLICAS", "1"),
        "storage_svc": env.get("STORAGE_REPLICAS", "1"),
    }
    counts = {}
    for service, value in raw.items():
        if not value.isdigit() or not 1 <= int(value) <= 8:
            raise ValueError(f"{PREFIX[service]}REPLICAS must be a whole number from 1 to 8")
        counts[service] = int(value)
    return counts


@dataclass(frozen=True)
class MeshSecrets:
    """The secrets the runner hands out; None leaves a service to refuse to start."""

    mesh_secret: str | None
    password_pepper: str | None
    media_url_keys: str | None = None
    """STORAGE_MEDIA_URL_KEYS: named keys, `id:secret` by commas."""


def mesh_secrets(env: Mapping[str, str], state_dir: Path) -> MeshSecrets:
    """The mesh secret, password pepper and media URL keys for the mesh: from env when set there,
    else (outside MESHGRAM_ENV=production) the ones kept in state_dir/secrets, generated on first
    use."""
    generate = env.get("MESHGRAM_ENV", "development") != "production"

    def secret(variable: str, file_name: str) -> str | None:
        """The variable's value, else the stored development secret (or None in production)."""
        value = env.get(variable)
        if value or not generate:
            return value or None
        return stored_secret(state_dir / "secrets", file_name)

    return MeshSecrets(
        mesh_secret=secret("DATA_ACCESS_MESH_SECRET", MESH_SECRET_FILE),
        password_pepper=secret("AUTH_PASSWORD_PEPPER", PASSWORD_PEPPER_FILE),
        media_url_keys=env.get("STORAGE_MEDIA_URL_KEYS")
        or (
            f"{MEDIA_URL_KEY_ID}:{stored_secret(state_dir / 'secrets', MEDIA_URL_KEY_FILE)}"
            if generate
            else None
        ),
    )


@dataclass
class Mesh:
    """A running (or startable) mesh; start() blocks until every part is healthy, and until
    stop() every part that exits is restarted by the supervisor."""

    database_url: str
    ports: MeshPorts = field(default_factory=MeshPorts)
    state_dir: Path = ROOT / "var"
    """Keys, blobs, development secrets and the rendered Envoy configuration live here."""
    cors_origins: tuple[str, ...] = ("http://localhost:5173", "http://127.0.0.1:5173")
    extra_env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    """When set, each process writes to <log_dir>/<name>.log instead of this terminal."""
    supervisor: Supervisor = field(default_factory=Supervisor)
    """Starts and restarts every process; may be shared with the caller (make run's database)."""
    replicas: Mapping[str, int] = field(default_factory=dict)
    """Processes per public service (1 when not named); the edge balances across them."""
    mail_dir: Path | None = None
    """Where the mailbox stores the mail auth_svc sends; None: <state_dir>/mail."""
    mtls: bool = field(default_factory=lambda: mtls_from_env(os.environ))
    """Mutual TLS on every internal hop (edge to services, services to peers) with
    certificates of the development CA in <state_dir>/certs; MESH_MTLS=0 turns it off."""
    edge_tls: bool | None = None
    """HTTPS at the edge for clients (tools/edge_tls.py), the edge port then redirecting to it:
    None follows EDGE_TLS / EDGE_TLS_CERT of the environment (extra_env first); True serves
    the development certificate unless a real one is named there; False keeps plain HTTP."""
    _secrets: MeshSecrets | None = None
    _s3_endpoint: str | None = None
    """The local S3 server's URL, when this mesh started one."""
    _downstream_tls: DownstreamTls | None = None
    _downstream_tls_decided: bool = False

    @property
    def edge_domain(self) -> str | None:
        """EDGE_DOMAIN (from extra_env, else the environment): the edge routes by host."""
        return domain_from_env({**os.environ, **self.extra_env})

    @property
    def edge_address(self) -> str:
        """host:port of the Envoy listener."""
        return f"127.0.0.1:{self.ports.edge}"

    @property
    def downstream_tls(self) -> DownstreamTls | None:
        """The edge's HTTPS settings, or None for plain HTTP; decided (and the development
        certificate made) on first use, so later certificate changes are the edge's to pick up."""
        if not self._downstream_tls_decided:
            env = {**os.environ, **self.extra_env}
            if self.edge_tls is False:
                env = {k: v for k, v in env.items() if k not in ("EDGE_TLS_CERT", "EDGE_TLS_KEY")}
            if self.edge_tls is not None:
                env["EDGE_TLS"] = "1" if self.edge_tls else "0"
            self._downstream_tls = edge_tls.from_env(env, self.certs_dir)
            self._downstream_tls_decided = True
        return self._downstream_tls

    @property
    def https_address(self) -> str:
        """host:port of the edge's HTTPS listener; RuntimeError when this edge has no TLS."""
        tls = self.downstream_tls
        if tls is None:
            raise RuntimeError("this mesh's edge serves plain HTTP (EDGE_TLS is off)")
        return f"127.0.0.1:{tls.https_port}"

    def media_cache_events(self) -> dict[str, int]:
        """The edge media cache's event counters since Envoy started, by event (hit, miss,
        validate, uncacheable, ...), read from Envoy's admin stats."""
        url = f"http://127.0.0.1:{self.ports.admin}/stats?filter=^cache[.]event[.]"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        events = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            events[name.rsplit(".", 1)[-1]] = int(value)
        return events

    def start(self, timeout: float = 60.0) -> None:
        """Start the mailbox, data_access, the services and Envoy; raise if any is not healthy
        in time."""
        try:
            self.start_mailbox(timeout)
            self.start_s3_server(timeout)
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
        """Start every replica of one Python service under supervision and wait until each
        reports SERVING."""
        started = [
            (
                replica,
                self._spawn(
                    self.process_name(service, replica),
                    [sys.executable, "-m", service],
                    self.service_env(service, replica),
                ),
            )
            for replica in range(self.replica_count(service))
        ]
        tls = self.workload_tls(service)
        for replica, process in started:
            _wait_serving(f"127.0.0.1:{self.ports.of(service, replica)}", timeout, process, tls)

    @property
    def certs_dir(self) -> Path:
        """Folder of this mesh's development CA and workload certificates."""
        return self.state_dir / "certs"

    def workload_certificate(self, workload: str) -> CertFiles:
        """The files of workload's certificate (made or renewed when needed)."""
        return ensure_workload_certificate(workload, directory=self.certs_dir)

    def channel(self, service: str, replica: int = 0, *, as_workload: str) -> grpc.aio.Channel:
        """A grpc.aio channel straight to one replica of service, presenting as_workload's
        certificate when this mesh runs mutual TLS (tests and tools reaching past the edge)."""
        return open_channel(
            f"127.0.0.1:{self.ports.of(service, replica)}", self.workload_tls(as_workload)
        )

    def caller_metadata(self, workload: str) -> tuple[tuple[str, str], ...]:
        """Metadata naming workload to data_access: none over mutual TLS (the certificate of
        channel(..., as_workload=workload) does), its caller token over plaintext."""
        if self.mtls:
            return ()
        shared = {**os.environ, **self.extra_env}
        secret = mesh_secrets(shared, self.state_dir).mesh_secret
        if secret is None:
            raise RuntimeError("plaintext mesh without a mesh secret: no caller can be named")
        return (
            (CALLER_HEADER, workload),
            (CALLER_TOKEN_HEADER, derive_caller_token(secret, workload)),
        )

    def workload_tls(self, workload: str) -> MeshTls | None:
        """workload's mutual-TLS material, or None when this mesh runs plaintext."""
        if not self.mtls:
            return None
        files = self.workload_certificate(workload)
        return MeshTls.from_files(files.cert, files.key, files.ca)

    @property
    def mailbox_dir(self) -> Path:
        """Folder of the mails the mailbox received."""
        return self.mail_dir if self.mail_dir is not None else self.state_dir / "mail"

    def start_mailbox(self, timeout: float = 60.0) -> None:
        """Start the development mailbox under supervision and wait until it accepts
        connections."""
        env = without_service_settings(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["MAILBOX_PORT"] = str(self.ports.mailbox)
        env["MAILBOX_DIR"] = str(self.mailbox_dir)
        command = [sys.executable, "-m", "tools.mailbox", "serve"]
        process = self._spawn(MAILBOX, command, env)
        _wait_listening(self.ports.mailbox, timeout, process)

    def start_s3_server(self, timeout: float = 60.0) -> None:
        """Start a local S3 server (in memory) for storage_svc when it is told to use S3 but
        given no endpoint; nothing otherwise."""
        shared = {**os.environ, **self.extra_env}
        if shared.get("STORAGE_BLOB_BACKEND") != "s3" or shared.get("STORAGE_S3_ENDPOINT_URL"):
            return
        port = self.ports.storage_svc + S3_PORT_OFFSET
        env = without_service_settings(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "tools.s3_dev_server", "--port", str(port)]
        process = self._spawn(S3_SERVER, command, env)
        _wait_listening(port, timeout, process)
        self._s3_endpoint = f"http://127.0.0.1:{port}"

    def data_access_target(self) -> str:
        """gRPC target naming every replica of data_access (the channel balances over them)."""
        count = self.replica_count("data_access")
        if count == 1:
            return f"127.0.0.1:{self.ports.data_access}"
        addresses = ",".join(f"127.0.0.1:{self.ports.of('data_access', r)}" for r in range(count))
        return f"ipv4:{addresses}"

    def replica_count(self, service: str) -> int:
        """How many processes of service this mesh runs."""
        return self.replicas.get(service, 1)

    @staticmethod
    def process_name(service: str, replica: int = 0) -> str:
        """Supervisor and log name of one replica: the service name, then name-2, name-3..."""
        return service if replica == 0 else f"{service}-{replica + 1}"

    def stop_services(self) -> None:
        """Stop the Python services (SIGTERM, then SIGKILL after their grace period)."""
        for service in reversed(SERVICES):
            self.stop_service(service)

    def stop_service(self, service: str) -> None:
        """Stop every replica of one service on purpose (they are not restarted): SIGTERM,
        SIGKILL only if one outlives its grace."""
        for replica in reversed(range(self.replica_count(service))):
            self.supervisor.stop(self.process_name(service, replica))

    def stop(self) -> None:
        """Stop everything this mesh started, edge first so clients see a clean refusal."""
        self.supervisor.stop("envoy")
        self.stop_services()
        self.supervisor.stop(MAILBOX)

    def service_env(self, service: str, replica: int = 0) -> dict[str, str]:
        """Environment of one service process: its own settings and credential, nobody else's.

        Each service sees only variables with its own prefix (plus shared ones such as
        MESHGRAM_ENV); DATABASE_URL and the mesh secret reach data_access alone.
        """
        shared = {**os.environ, **self.extra_env}
        if self._secrets is None:
            self._secrets = mesh_secrets(shared, self.state_dir)
        mesh_secret = self._secrets.mesh_secret
        others = tuple(prefix for name, prefix in PREFIX.items() if name != service)
        env = {
            key: value
            for key, value in shared.items()
            if not key.startswith(others) and key != "DATABASE_URL"
        }
        prefix = PREFIX[service]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env[f"{prefix}PORT"] = str(self.ports.of(service, replica))
        env[f"{prefix}METRICS_PORT"] = str(self.ports.metrics(service, replica))
        env.setdefault(f"{prefix}HOST", "127.0.0.1")
        if self.mtls:
            # The certificate names the service to its peers: no shared secret is handed out.
            certs = self.workload_certificate(service)
            env.setdefault(f"{prefix}TLS_CERT", str(certs.cert))
            env.setdefault(f"{prefix}TLS_KEY", str(certs.key))
            env.setdefault(f"{prefix}TLS_CA", str(certs.ca))
            mesh_secret = None
        if service == "data_access":
            env["DATABASE_URL"] = self.database_url
            if mesh_secret is not None:
                env["DATA_ACCESS_MESH_SECRET"] = mesh_secret
            return env
        env[f"{prefix}DATA_ACCESS_ADDR"] = self.data_access_target()
        if mesh_secret is not None:
            env[f"{prefix}DATA_ACCESS_TOKEN"] = derive_caller_token(mesh_secret, service)
        if service in ("user_svc", "storage_svc"):
            env[f"{prefix}AUTH_ADDR"] = f"127.0.0.1:{self.ports.auth_svc}"
        if service == "auth_svc":
            if self._secrets.password_pepper is not None:
                env["AUTH_PASSWORD_PEPPER"] = self._secrets.password_pepper
            env.setdefault(
                "AUTH_JWT_PRIVATE_KEY_FILE", str(self.state_dir / "keys" / "jwt-ed25519.pem")
            )
            env.setdefault("AUTH_JWT_KEYS_DIR", str(self.state_dir / "keys" / "jwt"))
            # Mail goes to this mesh's mailbox unless an SMTP server is configured; its links
            # lead to this mesh's edge.
            if "AUTH_SMTP_HOST" not in env:
                env["AUTH_SMTP_HOST"] = "127.0.0.1"
                env["AUTH_SMTP_PORT"] = str(self.ports.mailbox)
                env["AUTH_SMTP_SECURITY"] = "none"
            domain = self.edge_domain
            # With EDGE_DOMAIN the account pages live on the auth host (docs/routing.md).
            hosts = self._edge_host_origins(domain) if domain else {}
            env.setdefault("AUTH_PUBLIC_URL", hosts.get("auth", self._edge_origin("localhost")))
            # Browser calls that carry the refresh-token cookie must come from a page the
            # edge lets in.
            # The edge's own pages (/docs, /account) count too: browsers send their Origin.
            own = [self._edge_origin(host) for host in ("localhost", "127.0.0.1")]
            own += [hosts[label] for label in ("auth", "api") if label in hosts]
            env.setdefault("AUTH_BROWSER_ORIGINS", ",".join([*self.cors_origins, *own]))
        if service == "storage_svc":
            env.setdefault("STORAGE_BLOB_DIR", str(self.state_dir / "blobs"))
            env.setdefault("STORAGE_SPOOL_DIR", str(self.state_dir / "uploads"))
            if self._secrets.media_url_keys is not None:
                env["STORAGE_MEDIA_URL_KEYS"] = self._secrets.media_url_keys
            if self._s3_endpoint is not None:
                env["STORAGE_S3_ENDPOINT_URL"] = self._s3_endpoint
                env["STORAGE_S3_ACCESS_KEY_ID"] = DEV_ACCESS_KEY_ID
                env["STORAGE_S3_SECRET_ACCESS_KEY"] = DEV_SECRET_ACCESS_KEY
                env["STORAGE_S3_CREATE_BUCKET"] = "true"
        return env

    def restart_edge(
        self,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        *,
        tls: bool | None = None,
    ) -> None:
        """Stop Envoy and start it on a fresh configuration, after env (EDGE_* settings, say) is
        added to this mesh's environment and HTTPS switched on or off when tls is given; return
        once it is healthy again."""
        self.extra_env = {**self.extra_env, **(env or {})}
        self.supervisor.stop("envoy")
        if tls is not None:
            self.edge_tls = tls
        self._downstream_tls_decided = False
        self._start_envoy(timeout)

    def _edge_host_origins(self, domain: str) -> dict[str, str]:
        """The origin of each of domain's hosts (auth, api, media): https on the HTTPS port when
        TLS is on."""
        tls = self.downstream_tls
        if tls is None:
            return host_urls(domain, self.ports.edge)
        return host_urls(domain, tls.https_port, "https")

    def _edge_origin(self, host: str) -> str:
        """The origin of the edge's pages at host: https on the HTTPS port when TLS is on."""
        tls = self.downstream_tls
        if tls is None:
            return f"http://{host}:{self.ports.edge}"
        return f"https://{host}:{tls.https_port}"

    def edge_config(self) -> EdgeConfig:
        """The configuration of this mesh's edge (another edge replica changes its ports and
        media cache folder)."""
        env = {**os.environ, **self.extra_env}
        return EdgeConfig(
            listen_host="127.0.0.1",
            listen_port=self.ports.edge,
            admin_port=self.ports.admin,
            cors_origins=self.cors_origins,
            upstreams={
                svc: [
                    f"127.0.0.1:{self.ports.of(svc, replica)}"
                    for replica in range(self.replica_count(svc))
                ]
                for svc in PUBLIC
            },
            media_cache_dir=self.state_dir / "run" / f"edge-cache-{self.ports.edge}",
            upstream_tls=self._edge_tls(),
            # The services read the same OTEL_* variables from their environment.
            tracing=edge_tracing(env),
            downstream_tls=self.downstream_tls,
            downstream_tls_secret=edge_tls.sds_path(self._edge_config_path()),
            jwt=edge_jwt_from_env(env),
            **self.edge_rate_limits(),
            domain=self.edge_domain,
        )

    def _edge_config_path(self) -> Path:
        """Where this mesh's edge configuration is written."""
        return self.state_dir / "run" / f"envoy-{self.ports.edge}.yaml"

    def _start_envoy(self, timeout: float) -> None:
        """Render the edge config, start Envoy and wait until every cluster is healthy."""
        path = write(self.edge_config(), self._edge_config_path())
        command = [
            str(ENVOY_BIN),
            "-c",
            str(path),
            "--log-level",
            "warn",
            # A restart after a crash reuses the same base id: Envoy's hot-restart epoch 0
            # takes over the shared memory the dead process left behind.
            "--base-id",
            str(self.ports.edge),
            "--drain-time-s",
            "2",
            # Access-log lines reach the terminal within half a second (Envoy's default is 10 s).
            "--file-flush-interval-msec",
            "500",
        ]
        process = self._spawn("envoy", command, without_service_settings(os.environ))
        hosts = {svc: self.replica_count(svc) for svc in PUBLIC}
        _wait_edge_healthy(self.ports.admin, timeout, process, hosts)
        if self.downstream_tls is not None:
            _wait_listening(self.downstream_tls.https_port, timeout, process)

    def edge_rate_limits(self) -> dict[str, Any]:
        """The edge's rate limits (MESHGRAM_RATE_LIMITS) and where it asks about the shared
        ones (EDGE_RATE_LIMITER, "host:port" by commas; auth_svc's replicas when unset), as
        EdgeConfig arguments."""
        env = {**os.environ, **self.extra_env}
        limiter = [part.strip() for part in env.get("EDGE_RATE_LIMITER", "").split(",")]
        return {
            "rate_limits": parse_limits(env.get("MESHGRAM_RATE_LIMITS", "")),
            "rate_limiter": tuple(filter(None, limiter)),
        }

    def _edge_tls(self) -> UpstreamTls | None:
        """The edge's client certificate towards the services, or None in plaintext mode."""
        if not self.mtls:
            return None
        files = self.workload_certificate("edge")
        return UpstreamTls(
            cert=files.cert,
            key=files.key,
            ca=files.ca,
            identities={svc: spiffe_id(svc) for svc in PUBLIC},
        )

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start one supervised child, logging to this terminal or to log_dir."""
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = self.log_dir / f"{name}.log"
        spec = ChildSpec(name=name, command=command, env=env, cwd=ROOT, output=output)
        return self.supervisor.start(spec)


def without_service_settings(env: Mapping[str, str]) -> dict[str, str]:
    """env minus every service's settings and secrets and DATABASE_URL, for the processes that
    need none of them (Envoy, PostgreSQL)."""
    return {
        key: value
        for key, value in env.items()
        if not key.startswith(tuple(PREFIX.values())) and key != "DATABASE_URL"
    }


def _wait_listening(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Wait until proc accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def _wait_serving(
    address: str, timeout: float, proc: subprocess.Popen[bytes], tls: MeshTls | None = None
) -> None:
    """Poll the gRPC health service at address until it answers SERVING; with tls, over mutual
    TLS with that certificate (the service accepts nothing else)."""
    deadline = time.monotonic() + timeout
    channel = (
        grpc.insecure_channel(address)
        if tls is None
        else grpc.secure_channel(address, tls.channel_credentials())
    )
    with channel:
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


def _wait_edge_healthy(
    admin_port: int, timeout: float, proc: subprocess.Popen[bytes], hosts: Mapping[str, int]
) -> None:
    """Poll Envoy's admin until it is ready and every upstream cluster has `hosts[cluster]`
    healthy endpoints."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/clusters", timeout=1) as r:
                text = r.read().decode()
            healthy = Counter(
                line.split("::", 1)[0]
                for line in text.splitlines()
                if "::health_flags::healthy" in line
            )
            if all(healthy[name] >= count for name, count in hosts.items()):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"edge clusters not healthy after {timeout:.0f}s")
