"""The development mailbox: an SMTP server on loopback that keeps every mail it receives as a
file, so that `make run` can send real mail without sending any of it anywhere.

    python -m tools.mailbox serve            # what `make run` supervises
    python -m tools.mailbox latest [--to ADDRESS] [--links]

Each mail is stored atomically as <MAILBOX_DIR>/<UTC time>-<sequence>.eml (default var/mail),
with an X-Original-To header per envelope recipient added on top; the server listens on
127.0.0.1:<MAILBOX_PORT> (default 8025) and logs one line per stored mail, naming its file.
`latest` prints the newest mail (its headers and plain-text part), or with --links only the
links it holds, one per line; --to keeps to mail for that address.
"""

from __future__ import annotations

import argparse
import asyncio
import email.policy
import functools
import itertools
import os
import re
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import Parser
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_PORT = 8025
DEFAULT_DIR = ROOT / "var" / "mail"
MAX_MAIL_BYTES = 10 * 1024 * 1024
SUFFIX = ".eml"
_LINK = re.compile(r"https?://[^\s<>\"']+")
_HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


class MailStore:
    """A folder of received mails, one file each, named so that names sort by arrival."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sequence = itertools.count(1)

    def store(self, content: bytes, recipients: Sequence[str]) -> str:
        """Write one mail atomically (a reader never sees half of it); return its id (the
        file name without .eml)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        header = b"".join(
            f"X-Original-To: {address}\r\n".encode() for address in recipients if _one_line(address)
        )
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(header + content)
                file.flush()
                os.fsync(file.fileno())
            while True:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
                mail_id = f"{stamp}-{next(self._sequence):06d}"
                try:
                    # A link fails rather than replace a file of the same name (another
                    # mailbox on the same folder).
                    os.link(temporary, self.directory / f"{mail_id}{SUFFIX}")
                except FileExistsError:
                    continue
                return mail_id
        finally:
            os.unlink(temporary)


def _one_line(value: str) -> bool:
    """Whether value holds no line break (an envelope address must not add a header)."""
    return "\r" not in value and "\n" not in value


class MailboxHandler:
    """aiosmtpd handler that stores every accepted mail."""

    def __init__(self, store: MailStore) -> None:
        self._store = store

    # aiosmtpd looks its hooks up by this name.
    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Store the mail and log its id; answer 250 once it is on disk."""
        content = envelope.original_content or b""
        mail_id = await asyncio.to_thread(self._store.store, content, list(envelope.rcpt_tos))
        print(f"mailbox: stored {mail_id} ({len(content)} bytes)", flush=True)
        return "250 OK stored"


async def open_mailbox(directory: Path, port: int = 0) -> asyncio.Server:
    """Start receiving mail on 127.0.0.1:port (0: a free port) into directory, in the running
    event loop; return the listening server."""
    loop = asyncio.get_running_loop()
    factory = functools.partial(
        SMTP,
        MailboxHandler(MailStore(directory)),
        hostname="mailbox.localhost",
        data_size_limit=MAX_MAIL_BYTES,
        enable_SMTPUTF8=True,
        timeout=60,
        loop=loop,
    )
    return await loop.create_server(factory, host=HOST, port=port)


async def serve(port: int, directory: Path) -> None:
    """Receive mail on 127.0.0.1:port into directory until SIGTERM or SIGINT."""
    server = await open_mailbox(directory, port)
    print(f"mailbox: listening on {HOST}:{port}, storing mail in {directory}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


@dataclass(frozen=True)
class StoredMail:
    """A mail in the mailbox: its file and its parsed message."""

    path: Path
    message: EmailMessage

    def recipients(self) -> set[str]:
        """The addresses it was delivered to (envelope) or addressed to (To), lower-cased."""
        found = {str(value).strip().lower() for value in self.message.get_all("X-Original-To", [])}
        to = self.message["To"]
        if to is not None:
            found |= {address.addr_spec.lower() for address in getattr(to, "addresses", ())}
        return found

    def text(self) -> str:
        """The plain-text part (or the HTML one when it has none)."""
        body = self.message.get_body(("plain", "html"))
        return "" if body is None else str(body.get_content())

    def links(self) -> list[str]:
        """Every link of the mail, in order of appearance, each once."""
        found: list[str] = []
        for part in self.message.walk():
            if part.get_content_maintype() != "text":
                continue
            content = str(part.get_content())
            if part.get_content_subtype() == "html":
                found += _HREF.findall(content)
            else:
                found += _LINK.findall(content)
        return list(dict.fromkeys(found))


def read_mail(path: Path) -> StoredMail:
    """Parse a stored mail."""
    # As text: the bytes parser would leave an internationalised (UTF-8) address undecoded.
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    message = Parser(policy=email.policy.default).parsestr(text)
    assert isinstance(message, EmailMessage)
    return StoredMail(path, message)


def stored_mails(directory: Path) -> list[Path]:
    """The stored mails in arrival order (oldest first)."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{SUFFIX}"))


def latest_mail(directory: Path, to: str | None = None) -> StoredMail | None:
    """The newest stored mail (for the address `to`, when given), or None."""
    wanted = None if to is None else to.strip().lower()
    for path in reversed(stored_mails(directory)):
        mail = read_mail(path)
        if wanted is None or wanted in mail.recipients():
            return mail
    return None


def describe(mail: StoredMail) -> str:
    """A mail as `latest` prints it: headers a reader wants, its file, its text."""
    lines = [f"{name}: {mail.message[name]}" for name in ("From", "To", "Subject", "Date")]
    return "\n".join([*lines, f"File: {mail.path}", "", mail.text().rstrip(), ""])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    # MAILBOX_DIR and MAILBOX_PORT may come from .env as for `make run` (the shell's win).
    env = {**dotenv_values(ROOT / ".env"), **os.environ}
    folder = argparse.ArgumentParser(add_help=False)
    folder.add_argument(
        "--dir",
        type=Path,
        default=Path(env.get("MAILBOX_DIR") or DEFAULT_DIR),
        help="folder of the stored mails (MAILBOX_DIR, default var/mail)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m tools.mailbox", description="The development mailbox of `make run`."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser(
        "serve", parents=[folder], help="receive mail on loopback and store it"
    )
    serve_command.add_argument(
        "--port",
        type=int,
        default=int(env.get("MAILBOX_PORT") or DEFAULT_PORT),
        help="SMTP port on 127.0.0.1 (MAILBOX_PORT, default 8025)",
    )
    latest = commands.add_parser("latest", parents=[folder], help="print the newest stored mail")
    latest.add_argument("--to", help="only mail for this address")
    latest.add_argument("--links", action="store_true", help="print only its links")
    args = parser.parse_args(argv)

    if args.command == "serve":
        asyncio.run(serve(args.port, args.dir))
        return 0
    mail = latest_mail(args.dir, args.to)
    if mail is None:
        whom = f" for {args.to}" if args.to else ""
        print(f"no mail{whom} in {args.dir}", file=sys.stderr)
        return 1
    print("\n".join(mail.links()) if args.links else describe(mail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
