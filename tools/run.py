"""`make run` / `make dev`: the whole system on this machine in one command.

Starts an embedded PostgreSQL (unless DATABASE_URL is set), applies migrations, starts the
development mailbox, data_access, auth_svc, user_svc, storage_svc and the Envoy edge, and keeps
them running until Ctrl-C or SIGTERM: any of them that exits is restarted (tools.supervisor),
and all of them stop with the runner. With --reload the Python services restart whenever their
code changes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from dotenv import load_dotenv

from tools.mesh import ROOT, Mesh, MeshPorts, replicas_from_env, without_service_settings
from tools.supervisor import ChildSpec, Supervisor

WATCHED = ("auth_svc", "user_svc", "storage_svc", "data_access", "meshkit", "meshgram")


def database(supervisor: Supervisor, timeout: float = 60.0) -> str:
    """Return the database URL: DATABASE_URL, or that of an embedded PostgreSQL kept in
    var/pgdata and run by supervisor (restarted if it dies, stopped with the others)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from data_access.embedded import ForegroundPostgres

    data_dir = Path(os.environ.get("DATA_ACCESS_PG_DATA_DIR", ROOT / "var" / "pgdata"))
    server = ForegroundPostgres.prepare(data_dir)
    process = supervisor.start(
        ChildSpec(
            name="postgres",
            command=server.command,
            env=without_service_settings(os.environ),
            cwd=server.data_dir,
            # SIGINT is PostgreSQL's fast shutdown: SIGTERM would wait for every client to leave.
            stop_signal=signal.SIGINT,
            user=server.user,
            before_start=server.clear_stale_lock,
        )
    )
    server.wait_ready(process, timeout)
    print(f"meshgram: embedded PostgreSQL in {data_dir}", flush=True)
    return server.ensure_database()


def migrate(url: str) -> None:
    """Apply the database migrations in a child process (data_access owns Alembic)."""
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "data_access.migrate"], cwd=ROOT, env=env, check=True)


def banner(mesh: Mesh) -> str:
    """What a user needs to start talking to the running system."""
    edge = mesh.edge_address
    tls = mesh.downstream_tls
    domain = mesh.edge_domain
    # Routing by host (docs/routing.md): every example names the host that serves it.
    auth = f" -H 'Host: auth.{domain}'" if domain else ""
    authority = f" -authority api.{domain}" if domain else ""
    hosts = f" for auth., api., media. of {domain}" if domain else ""
    if tls is None:
        docs = f"api.{domain}:{mesh.ports.edge}" if domain else edge
        lines = [
            f"meshgram is up: edge http://{edge}{hosts} (native gRPC, gRPC-web and REST/JSON)",
            f"  grpcurl -plaintext{authority} {edge} list",
            f"  curl -s{auth} http://{edge}/.well-known/jwks.json",
            f"  API reference: http://{docs}/docs",
        ]
    else:
        # The development CA is trusted by pointing each client at it (docs/tls.md).
        https = f"localhost:{tls.https_port}"
        docs = f"api.{domain}:{tls.https_port}" if domain else https
        trust = f" -cacert {mesh.certs_dir / 'ca.pem'}" if tls.development else ""
        curl_trust = f" --cacert {mesh.certs_dir / 'ca.pem'}" if tls.development else ""
        lines = [
            f"meshgram is up: edge https://{https}{hosts} (native gRPC, gRPC-web and REST/JSON "
            f"over TLS); http://{edge} redirects there",
            f"  grpcurl{trust}{authority} {https} list",
            f"  curl -s{curl_trust}{auth} https://{https}/.well-known/jwks.json",
            f"  API reference: https://{docs}/docs",
        ]
    return "\n".join(
        [
            "",
            *lines,
            f"  Envoy admin: http://127.0.0.1:{mesh.ports.admin}/ (loopback only)",
            f"  Mail sent by auth_svc lands in {mesh.mailbox_dir}: python -m tools.mailbox latest",
            "Ctrl-C stops everything.",
            "",
        ]
    )


class StopRequest:
    """Records SIGINT/SIGTERM without taking any lock.

    A handler runs in the main thread between two of its bytecodes; had it called
    threading.Event.set(), a second Ctrl-C arriving while the main thread held that event's
    lock would wait for itself, and the runner would hang with every service still up.
    """

    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: note the request, nothing else."""
        self.requested = True

    def wait(self, poll_seconds: float = 0.2) -> None:
        """Return once a stop was requested."""
        while not self.requested:
            time.sleep(poll_seconds)


def main() -> None:
    """Run the mesh until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reload", action="store_true", help="restart services on code change")
    args = parser.parse_args()
    load_dotenv(ROOT / ".env", override=False)

    request = StopRequest()
    signal.signal(signal.SIGTERM, request.handle)
    signal.signal(signal.SIGINT, request.handle)

    supervisor = Supervisor()
    mesh: Mesh | None = None
    try:
        url = database(supervisor)
        migrate(url)
        cors = tuple(
            origin.strip()
            for origin in os.environ.get(
                "EDGE_CORS_ORIGINS", "http://localhost:5173,http://127.0.0.1:5173"
            ).split(",")
            if origin.strip()
        )
        mesh = Mesh(
            database_url=url,
            ports=MeshPorts.from_env(os.environ),
            replicas=replicas_from_env(os.environ),
            cors_origins=cors,
            supervisor=supervisor,
            mail_dir=Path(os.environ["MAILBOX_DIR"]) if os.environ.get("MAILBOX_DIR") else None,
        )
        mesh.start()
        print(banner(mesh), flush=True)
        stop_watching = threading.Event()
        watcher = threading.Thread(
            target=_reload_until, args=(stop_watching, mesh), name="reload", daemon=True
        )
        if args.reload:
            watcher.start()
        request.wait()
        stop_watching.set()  # from this thread, never from the signal handler
        if watcher.is_alive():
            watcher.join(timeout=5)
    finally:
        print("meshgram: stopping", flush=True)
        if mesh is not None:
            mesh.stop()
        # The database last, once nothing uses it.
        supervisor.stop_all()


def _reload_until(stop: threading.Event, mesh: Mesh) -> None:
    """Restart the Python services whenever a watched source file changes."""
    from watchfiles import PythonFilter, watch

    paths = [ROOT / name for name in WATCHED if (ROOT / name).exists()]
    for changes in watch(*paths, watch_filter=PythonFilter(), stop_event=stop):
        changed = sorted({Path(path).relative_to(ROOT).parts[0] for _, path in changes})
        print(f"meshgram: {', '.join(changed)} changed, restarting services", flush=True)
        mesh.stop_services()
        try:
            mesh.start_services()
        except (RuntimeError, TimeoutError) as exc:
            print(f"meshgram: services failed to start ({exc}); fix the code and save", flush=True)


if __name__ == "__main__":
    main()
