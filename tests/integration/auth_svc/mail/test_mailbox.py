"""The development mailbox (tools/mailbox.py): what it stores, what its command line shows, and
the process `make run` supervises."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import aiosmtplib
import pytest

from auth_svc.mail.messages import MailRenderer
from tests.integration.auth_svc.mail.conftest import Mailbox, free_port
from tools import mailbox as mailbox_tool
from tools.mesh import ROOT, Mesh, MeshPorts

pytestmark = pytest.mark.integration

TOKEN = "Zt3_q-4fXbW9kR2mVn8pL0sYc7uHjE5a"


async def send(port: int, renderer: MailRenderer, to: str, token: str = TOKEN) -> None:
    message = renderer.render("verify_email", to=to, token=token, lifetime=timedelta(hours=1))
    await aiosmtplib.send(message, hostname="127.0.0.1", port=port, start_tls=False, timeout=5)


async def test_each_mail_is_stored_whole_in_arrival_order(
    mailbox: Mailbox, renderer: MailRenderer
) -> None:
    await send(mailbox.port, renderer, "ada@example.org", token="first")
    await send(mailbox.port, renderer, "bob@example.org", token="second")

    files = sorted(mailbox.folder.iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"], "no temporary file is left behind"
    first, second = (f.stem for f in files)
    assert first.endswith("-000001")
    assert second.endswith("-000002")
    assert first[:8].isdigit()
    assert "T" in first
    assert first < second
    mails = mailbox.mails()
    assert [m.message["X-Original-To"] for m in mails] == ["ada@example.org", "bob@example.org"]
    assert mails[1].message["Subject"] == "Confirm your email address for meshgram"


async def test_latest_prints_the_newest_mail_or_that_for_an_address(
    mailbox: Mailbox, renderer: MailRenderer, capsys: pytest.CaptureFixture[str]
) -> None:
    await send(mailbox.port, renderer, "ada@example.org", token="for-ada")
    await send(mailbox.port, renderer, "bob@example.org", token="for-bob")
    capsys.readouterr()  # the mailbox's own log lines

    assert mailbox_tool.main(["latest", "--dir", str(mailbox.folder)]) == 0
    newest = capsys.readouterr().out
    assert "To: bob@example.org" in newest
    assert "Subject: Confirm your email address for meshgram" in newest
    assert "http://localhost:8080/account/verify-email#token=for-bob" in newest

    folder = str(mailbox.folder)
    assert mailbox_tool.main(["latest", "--dir", folder, "--to", "ADA@example.org"]) == 0
    assert "To: ada@example.org" in capsys.readouterr().out


async def test_latest_links_prints_only_the_links(
    mailbox: Mailbox, renderer: MailRenderer, capsys: pytest.CaptureFixture[str]
) -> None:
    await aiosmtplib.send(
        renderer.render("signup_attempt", to="ada@example.org"),
        hostname="127.0.0.1",
        port=mailbox.port,
        start_tls=False,
        timeout=5,
    )
    await send(mailbox.port, renderer, "ada@example.org")
    capsys.readouterr()  # the mailbox's own log lines

    folder = str(mailbox.folder)
    assert mailbox_tool.main(["latest", "--dir", folder, "--links"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"http://localhost:8080/account/verify-email#token={TOKEN}"
    ]
    stored = mailbox_tool.read_mail(mailbox_tool.stored_mails(mailbox.folder)[0])
    assert stored.links() == [
        "http://localhost:8080/",
        "http://localhost:8080/account/reset-password",
    ]


def test_latest_without_mail_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert mailbox_tool.main(["latest", "--dir", str(tmp_path / "none")]) == 1
    assert "no mail" in capsys.readouterr().err


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    """Return once condition() holds; TimeoutError after seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"not met within {seconds} s")


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def send_plainly(port: int, renderer: MailRenderer, to: str) -> None:
    """Send a verification mail with the standard library's blocking SMTP client."""
    message = renderer.render("verify_email", to=to, token=TOKEN, lifetime=timedelta(hours=1))
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.send_message(message)


def test_the_served_mailbox_logs_one_line_per_mail_and_stops_on_sigterm(
    tmp_path: Path, renderer: MailRenderer
) -> None:
    port = free_port()
    folder = tmp_path / "mail"
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.mailbox", "serve", "--port", str(port), "--dir", str(folder)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: listening(port), 20)
        send_plainly(port, renderer, "ada@example.org")
        wait_for(lambda: any(folder.glob("*.eml")), 5)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    [stored] = [line for line in output.splitlines() if "stored" in line]
    [path] = folder.glob("*.eml")
    assert path.stem in stored
    assert "ada@" not in output
    assert TOKEN not in output


def test_the_mesh_supervises_a_mailbox_that_auth_svc_sends_to(
    tmp_path: Path, renderer: MailRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("AUTH_SMTP_", "AUTH_PUBLIC_URL")):
            monkeypatch.delenv(name)
    mesh = Mesh(
        database_url="postgresql://db.invalid/meshgram",
        ports=MeshPorts.free(),
        state_dir=tmp_path,
        log_dir=tmp_path / "logs",
    )
    mesh.start_mailbox(timeout=20)
    try:
        env = mesh.service_env("auth_svc")
        assert env["AUTH_SMTP_HOST"] == "127.0.0.1"
        assert env["AUTH_SMTP_PORT"] == str(mesh.ports.mailbox)
        assert env["AUTH_SMTP_SECURITY"] == "none"
        assert env["AUTH_PUBLIC_URL"] == f"http://localhost:{mesh.ports.edge}"
        send_plainly(mesh.ports.mailbox, renderer, "ada@example.org")
        wait_for(lambda: bool(mailbox_tool.stored_mails(mesh.mailbox_dir)), 5)
        assert mesh.mailbox_dir == tmp_path / "mail"
    finally:
        mesh.stop()
    assert not listening(mesh.ports.mailbox)


def test_an_smtp_server_of_ones_own_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_SMTP_HOST", "smtp.example.test")
    monkeypatch.setenv("AUTH_SMTP_PORT", "587")
    mesh = Mesh(database_url="postgresql://db.invalid/meshgram", state_dir=tmp_path)
    env = mesh.service_env("auth_svc")
    assert (env["AUTH_SMTP_HOST"], env["AUTH_SMTP_PORT"]) == ("smtp.example.test", "587")
