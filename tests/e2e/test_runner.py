"""`make run`'s runner (tools/run.py) as a user drives it: up, then Ctrl-C pressed repeatedly.

Pressing Ctrl-C two or three times is what people do when a program seems slow to stop; the
runner must still stop every process it started, promptly, and never hang.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tools.mesh import ROOT, MeshPorts

BANNER = "meshgram is up"


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def runner(database_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], MeshPorts]]:
    """tools.run on free ports against the session's database, once it printed its banner."""
    ports = MeshPorts.free()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MESHGRAM_ENV": "development",
        "AUTH_BCRYPT_ROUNDS": "4",
        "EDGE_PORT": str(ports.edge),
        "EDGE_ADMIN_PORT": str(ports.admin),
        "AUTH_PORT": str(ports.auth_svc),
        "USER_PORT": str(ports.user_svc),
        "STORAGE_PORT": str(ports.storage_svc),
        "DATA_ACCESS_PORT": str(ports.data_access),
        # Its own mailbox: a developer's `make run` may hold the default port and folder.
        "MAILBOX_PORT": str(ports.mailbox),
        "MAILBOX_DIR": str(tmp_path / "mail"),
        # The session mesh delivers the shared database's mail, not this one.
        "AUTH_MAIL_SENDING": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        for line in process.stdout:
            if BANNER in line or time.monotonic() > deadline:
                break
        assert process.poll() is None, "the runner exited before it was up"
        yield process, ports
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_ctrl_c_pressed_again_and_again_still_stops_everything_promptly(
    runner: tuple[subprocess.Popen[str], MeshPorts],
) -> None:
    process, ports = runner
    reply = httpx.get(f"http://127.0.0.1:{ports.edge}/.well-known/jwks.json", timeout=10)
    assert reply.status_code == 200
    # A burst, as from a key held down: some land while the runner is already stopping.
    for _ in range(30):
        process.send_signal(signal.SIGINT)
        time.sleep(0.002)
    # Every service gets its shutdown grace (5 s) at most; well within this.
    process.wait(timeout=45)
    served = [ports.edge, ports.auth_svc, ports.user_svc, ports.storage_svc, ports.data_access]
    assert [port for port in served if listening(port)] == []
