"""A development S3 server on loopback (moto in server mode), for the dev runner and the tests.

    python -m tools.s3_dev_server [--port PORT]   # serve until SIGINT or SIGTERM

From code, either form gives the endpoint URL to hand to S3BlobStore(endpoint_url=...):

    with s3_dev_server() as endpoint_url:      # a free port; stopped on leaving the block
        ...
    endpoint_url, stop = start_s3_server()     # stop() when done

The server keeps everything in memory: its buckets are gone once it stops. It accepts any
credentials (DEV_ACCESS_KEY_ID / DEV_SECRET_ACCESS_KEY are as good as any) and creates no bucket
(S3BlobStore.ensure_bucket does). moto is a development dependency: only development code may
import this module.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

HOST = "127.0.0.1"
DEV_REGION = "us-east-1"
DEV_ACCESS_KEY_ID = "meshgram-dev"
DEV_SECRET_ACCESS_KEY = "meshgram-dev"


def start_s3_server(port: int = 0, *, quiet: bool = True) -> tuple[str, Callable[[], None]]:
    """Start an S3 server on 127.0.0.1:port (0: a free one) in a daemon thread; return its
    endpoint URL and a function that stops it (waiting for the thread; calling it again is
    harmless). quiet keeps its one-line-per-request log off."""
    if quiet:
        # The server's request log goes to the "werkzeug" logger, one line per request.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Imported here: the dev runner reads this module's constants without loading moto.
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    host, bound_port = server.get_host_and_port()
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            server.stop()

    return f"http://{host}:{bound_port}", stop


@contextmanager
def s3_dev_server(port: int = 0, *, quiet: bool = True) -> Iterator[str]:
    """Run an S3 server for the duration of the block; yield its endpoint URL."""
    endpoint_url, stop = start_s3_server(port, quiet=quiet)
    try:
        yield endpoint_url
    finally:
        stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve on the given port until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tools.s3_dev_server")
    parser.add_argument("--port", type=int, default=9000, help="port on 127.0.0.1 (0: any)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    options = parser.parse_args(argv)
    ending = threading.Event()

    def end(signum: int, frame: FrameType | None) -> None:
        ending.set()

    signal.signal(signal.SIGINT, end)
    signal.signal(signal.SIGTERM, end)
    with s3_dev_server(options.port, quiet=not options.verbose) as endpoint_url:
        print(f"S3 development server at {endpoint_url}", file=sys.stderr, flush=True)
        ending.wait()


if __name__ == "__main__":
    main()
