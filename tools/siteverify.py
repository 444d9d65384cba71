"""A development CAPTCHA provider: an HTTP server on loopback speaking siteverify (the protocol of
Cloudflare Turnstile and hCaptcha), so that auth_svc's CAPTCHA check can run without asking
anyone on the internet.

    python -m tools.siteverify serve --secret S [--port 8026] [--token T ...] [--single-use]

It answers POST /siteverify (and /turnstile/v0/siteverify) on 127.0.0.1:<port> (default 8026)
with form fields `secret`, `response` and optional `remoteip`. The secret must equal --secret
(else `invalid-input-secret`); a token passes when it is one of the --token values (default
XXXX.DUMMY.TOKEN.XXXX, like Turnstile's dummy token). Tokens are reusable by default so that the
dummy token works again and again; with --single-use each token passes once, as real tokens do,
and `timeout-or-duplicate` answers its reuse. One line is logged per request, naming the
remoteip and the outcome, never the secret or the token.

Tests use it in-process:

    with SiteverifyServer(secret="s3cret", single_use=True) as server:
        ...  # verify against server.url
        assert server.requests[0]["remoteip"] == "203.0.113.7"
        server.mode = "http-500"  # or "not-json", "hang" (no answer until closed), "normal"

`requests` holds the form fields of every request received, without the secret.
"""

from __future__ import annotations

import argparse
import hmac
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
DEFAULT_PORT = 8026
DUMMY_TOKEN = "XXXX.DUMMY.TOKEN.XXXX"
PATHS = ("/siteverify", "/turnstile/v0/siteverify")
MAX_BODY_BYTES = 64 * 1024
# How long a request waits in "hang" mode at most; closing the server ends the wait earlier.
HANG_SECONDS = 60.0

Mode = Literal["normal", "http-500", "not-json", "hang"]
MODES: tuple[Mode, ...] = get_args(Mode)


class SiteverifyServer:
    """A siteverify server on 127.0.0.1 answering from a thread; a context manager that starts it
    and closes it. `mode` may be changed while it runs."""

    def __init__(
        self,
        secret: str,
        *,
        tokens: Iterable[str] = (DUMMY_TOKEN,),
        single_use: bool = False,
        port: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not secret:
            raise ValueError("the siteverify server needs a secret")
        self.secret = secret
        self.tokens = frozenset(tokens)
        self.single_use = single_use
        self.mode: Mode = "normal"
        self._log = log
        self._lock = threading.Lock()
        self._used: set[str] = set()
        self._requests: list[dict[str, str]] = []
        self._closing = threading.Event()
        self._httpd = _HTTPServer((HOST, port), _Handler, owner=self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one given, or the free one picked for port 0)."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The siteverify URL to configure."""
        return f"http://{HOST}:{self.port}{PATHS[0]}"

    @property
    def requests(self) -> list[dict[str, str]]:
        """The form fields of each request received so far (without `secret`), oldest first."""
        with self._lock:
            return [dict(fields) for fields in self._requests]

    def start(self) -> SiteverifyServer:
        """Answer requests from a daemon thread; return self."""
        if self._thread is None:
            # A short poll interval: close() waits for the loop's next look at its stop flag.
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, args=(0.05,), name="siteverify", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop answering, end hanging requests and release the port."""
        self._closing.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> SiteverifyServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def answer(self, fields: dict[str, str]) -> dict[str, Any]:
        """The siteverify answer to a request's form fields (marking a single-use token used)."""
        secret = fields.get("secret", "")
        token = fields.get("response", "")
        if not secret:
            return _failure("missing-input-secret")
        if not hmac.compare_digest(secret.encode(), self.secret.encode()):
            return _failure("invalid-input-secret")
        if not token:
            return _failure("missing-input-response")
        if token not in self.tokens:
            return _failure("invalid-input-response")
        with self._lock:
            if self.single_use:
                if token in self._used:
                    return _failure("timeout-or-duplicate")
                self._used.add(token)
        return {
            "success": True,
            "challenge_ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "hostname": "localhost",
            "error-codes": [],
            "action": "",
            "cdata": "",
        }

    def _record(self, fields: dict[str, str]) -> None:
        """Keep a request's fields, without the secret."""
        with self._lock:
            self._requests.append({k: v for k, v in fields.items() if k != "secret"})

    def _wait_while_hanging(self) -> None:
        """Block until the server closes (or HANG_SECONDS pass)."""
        self._closing.wait(HANG_SECONDS)

    def _report(self, line: str) -> None:
        """Log one line, when a log was given."""
        if self._log is not None:
            self._log(line)


def _failure(code: str) -> dict[str, Any]:
    """A siteverify answer refusing the request with one error code."""
    return {"success": False, "error-codes": [code], "messages": []}


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows the SiteverifyServer its handlers answer for."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        owner: SiteverifyServer,
    ) -> None:
        super().__init__(address, handler)
        self.owner = owner


class _Handler(BaseHTTPRequestHandler):
    """Answers one HTTP connection for the SiteverifyServer."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    # http.server dispatches on these names.
    def do_POST(self) -> None:
        """Answer a siteverify request according to the server's mode."""
        owner = self.server.owner
        if urlsplit(self.path).path not in PATHS:
            owner._report(f"siteverify: POST {self.path} -> HTTP 404")
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            owner._report("siteverify: POST without Content-Length -> HTTP 411")
            self._send(HTTPStatus.LENGTH_REQUIRED, b"length required\n", "text/plain")
            return
        if not 0 <= length <= MAX_BODY_BYTES:
            owner._report(f"siteverify: POST of {length} bytes -> HTTP 413")
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"too large\n", "text/plain")
            return
        body = self.rfile.read(length).decode("utf-8", "replace")
        fields = {name: values[0] for name, values in parse_qs(body).items()}
        owner._record(fields)
        mode = owner.mode
        remoteip = fields.get("remoteip", "-")
        if mode == "hang":
            owner._report(f"siteverify: remoteip={remoteip} -> no answer (hang)")
            owner._wait_while_hanging()
            self.close_connection = True
            return
        if mode == "http-500":
            owner._report(f"siteverify: remoteip={remoteip} -> HTTP 500")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n", "text/plain")
            return
        if mode == "not-json":
            owner._report(f"siteverify: remoteip={remoteip} -> not JSON")
            self._send(HTTPStatus.OK, b"<html>siteverify</html>\n", "text/html")
            return
        answer = owner.answer(fields)
        outcome = "success" if answer["success"] else ", ".join(answer["error-codes"])
        owner._report(f"siteverify: remoteip={remoteip} -> {outcome}")
        self._send(HTTPStatus.OK, json.dumps(answer).encode(), "application/json")

    def do_GET(self) -> None:
        """siteverify takes POST only."""
        self.server.owner._report(f"siteverify: GET {self.path} -> HTTP 405")
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"use POST\n", "text/plain")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        """Send a whole response."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's own stderr log (the server logs its own lines)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.siteverify", description="A development siteverify server."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="answer siteverify requests on loopback")
    serve.add_argument("--secret", required=True, help="the secret requests must carry")
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (default {DEFAULT_PORT})"
    )
    serve.add_argument(
        "--token",
        action="append",
        dest="tokens",
        help=f"a token that passes (repeatable; default {DUMMY_TOKEN})",
    )
    serve.add_argument(
        "--single-use", action="store_true", help="each token passes once, as real tokens do"
    )
    serve.add_argument(
        "--mode", choices=MODES, default="normal", help="answer like a failing provider"
    )
    args = parser.parse_args(argv)

    server = SiteverifyServer(
        args.secret,
        tokens=args.tokens or (DUMMY_TOKEN,),
        single_use=args.single_use,
        port=args.port,
        log=lambda line: print(line, flush=True),
    )
    server.mode = args.mode
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    with server:
        reuse = "single-use" if args.single_use else "reusable"
        print(f"siteverify: listening on {server.url} ({reuse} tokens)", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
