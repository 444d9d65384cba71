"""`make run`'s embedded PostgreSQL under supervision: killed with SIGKILL, it comes back by itself
with its data, and a postmaster.pid naming someone else's PID does not keep it down."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from data_access.embedded import POSTMASTER_PID, ForegroundPostgres
from tools.supervisor import Backoff, ChildSpec, Supervisor

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> ForegroundPostgres:
    """A freshly initialised data folder."""
    return ForegroundPostgres.prepare(tmp_path / "pgdata")


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    """A quick supervisor, stopped after the test."""
    running = Supervisor(Backoff(initial=0.1, cap=0.5), log=lambda line: None)
    try:
        yield running
    finally:
        running.stop_all()


def start(supervisor: Supervisor, server: ForegroundPostgres, log: Path) -> int:
    """Start the server as make run does and wait until it is ready; return its PID."""
    process = supervisor.start(
        ChildSpec(
            name="postgres",
            command=server.command,
            env=dict(os.environ),
            cwd=server.data_dir,
            output=log,
            stop_signal=signal.SIGINT,
            user=server.user,
            before_start=server.clear_stale_lock,
        )
    )
    server.wait_ready(process, timeout=30)
    return process.pid


async def execute(url: str, statement: str) -> object:
    """Run one statement in autocommit mode; return the first column of its first row, if any."""
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text(statement))
            return result.scalar() if result.returns_rows else None
    finally:
        await engine.dispose()


async def test_a_killed_server_comes_back_with_its_data(
    server: ForegroundPostgres, supervisor: Supervisor, tmp_path: Path
) -> None:
    first = await asyncio.to_thread(start, supervisor, server, tmp_path / "postgres.log")
    url = await asyncio.to_thread(server.ensure_database)
    await execute(url, "CREATE TABLE kept AS SELECT 'still here' AS value")

    os.kill(first, signal.SIGKILL)

    deadline = time.monotonic() + 20
    while True:
        current = supervisor.process("postgres")
        if current is not None and current.pid != first:
            break
        assert time.monotonic() < deadline, "postgres was not restarted"
        await asyncio.sleep(0.05)
    await asyncio.to_thread(server.wait_ready, current, 30)
    assert await execute(url, "SELECT value FROM kept") == "still here"

    supervisor.stop("postgres")
    # SIGINT is a clean (fast) shutdown: the server removed its lock file.
    assert not (server.data_dir / POSTMASTER_PID).exists()


def test_a_lock_file_naming_another_live_process_is_cleared(
    server: ForegroundPostgres, supervisor: Supervisor, tmp_path: Path
) -> None:
    # As after a reboot: postmaster.pid names a PID that now belongs to another program of the
    # server's user (PostgreSQL itself only sees through PIDs of other users).
    other = subprocess.Popen(["sleep", "60"], user=server.user)
    try:
        lock = server.data_dir / POSTMASTER_PID
        lock.write_text(f"{other.pid}\n{server.data_dir}\n0\n5432\n{server.socket_dir}\n\n\n")
        start(supervisor, server, tmp_path / "postgres.log")
        assert lock.read_text().splitlines()[0] != str(other.pid)
    finally:
        other.kill()
        other.wait()
