"""`python -m data_access.migrate` and `python -m data_access` as real processes on an embedded
PostgreSQL (what `make migrate` and a bare `python -m data_access` do without DATABASE_URL), and
data_access refusing to start without a usable mesh secret."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from meshgram.dataaccess.v1 import dataaccess_pb2 as pb
from meshgram.dataaccess.v1 import dataaccess_pb2_grpc as pb_grpc
from meshkit.peers import health_check
from tests.helpers import caller_metadata, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
MESH_SECRET = secrets.token_urlsafe(32)


def _environment(pg_data_dir: Path, port: int) -> dict[str, str]:
    """The test's environment minus any database or data_access configuration, plus a mesh
    secret (migrations do without one)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "DATABASE_URL" and not key.startswith("DATA_ACCESS_")
    }
    env.update(
        MESHGRAM_ENV="development",
        DATA_ACCESS_PG_DATA_DIR=str(pg_data_dir),
        DATA_ACCESS_PORT=str(port),
        DATA_ACCESS_MESH_SECRET=MESH_SECRET,
        PYTHONPATH=str(ROOT),
    )
    return env


async def _wait_serving(address: str, process: asyncio.subprocess.Process) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        check = health_check(channel)
        async with asyncio.timeout(60):
            while process.returncode is None:
                try:
                    response = await check(health_pb2.HealthCheckRequest(), timeout=1)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
    raise AssertionError(f"data_access exited with {process.returncode} before serving")


async def test_migrate_then_serve_on_the_embedded_database(tmp_path: Path) -> None:
    pg_data_dir = tmp_path / "var" / "pgdata"
    port = free_port()
    env = _environment(pg_data_dir, port)

    migrate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "data_access.migrate",
        cwd=tmp_path,
        env={k: v for k, v in env.items() if k != "DATA_ACCESS_MESH_SECRET"},
    )
    assert await asyncio.wait_for(migrate.wait(), 120) == 0

    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "data_access", cwd=tmp_path, env=env
    )
    try:
        await _wait_serving(f"127.0.0.1:{port}", server)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            created = await pb_grpc.AccountStoreServiceStub(channel).CreateAccount(
                pb.CreateAccountRequest(
                    email="first@example.com", username="first", password_hash="h"
                ),
                metadata=caller_metadata(MESH_SECRET, "auth_svc"),
            )
        assert created.account.username == "first"
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(server.wait(), 60)

    assert exit_code == 0
    # The embedded server lived exactly as long as the process that started it.
    assert not (pg_data_dir / "postmaster.pid").exists()


@pytest.mark.parametrize(
    ("environment", "secret", "refusal"),
    [
        (
            "development",
            None,
            "DATA_ACCESS_MESH_SECRET is not set. `make run` generates one once (var/secrets/)",
        ),
        ("production", "a-guessable-mesh-secret", "DATA_ACCESS_MESH_SECRET is too weak"),
    ],
)
def test_data_access_refuses_to_start_without_a_usable_mesh_secret(
    tmp_path: Path, environment: str, secret: str | None, refusal: str
) -> None:
    env = _environment(tmp_path / "pgdata", free_port())
    env["MESHGRAM_ENV"] = environment
    del env["DATA_ACCESS_MESH_SECRET"]
    if secret is not None:
        env["DATA_ACCESS_MESH_SECRET"] = secret

    result = subprocess.run(
        [sys.executable, "-m", "data_access"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert refusal in result.stderr
    assert "Traceback" not in result.stderr
    if secret is not None:
        assert secret not in result.stderr + result.stdout
    # It stopped before starting a database.
    assert not (tmp_path / "pgdata").exists()
