"""The cost of HTTPS at the edge: the same profile reads through the plain edge and through the
edge with TLS on (EDGE_TLS=1, the development certificate), over HTTP/2 and HTTP/1.1 keep-alive
connections, so the only difference is the encryption of each byte (h2load opens every
connection once, before measuring: the handshake itself is not in these figures)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench import h2load

PROTOCOLS = ("HTTP/2", "HTTP/1.1")
Load = Callable[[float], h2load.Run]


def profile_reads(base: str, paths: Sequence[str], concurrency: int, protocol: str) -> Load:
    """REST profile reads of paths (cycled) at base ("http://..." or "https://..."), signed
    out, concurrency requests in flight: over HTTP/2 8 connections of several streams, over
    HTTP/1.1 one connection per request in flight."""
    http1 = protocol == "HTTP/1.1"
    connections = concurrency if http1 else 8
    return lambda seconds: h2load.run(
        [f"{base}{path}" for path in paths],
        connections=connections,
        streams=1 if http1 else max(1, concurrency // connections),
        seconds=seconds,
        warmup=0,
        headers={},
        http1=http1,
    )


def cost_note(plain: h2load.Run, tls: h2load.Run) -> str:
    """What TLS changed, one line: throughput and median and p99 latency."""
    return (
        f"TLS vs plain: {tls.rps / plain.rps - 1:+.0%} req/s, p50 {tls.p50 - plain.p50:+.2f} ms, "
        f"p99 {tls.percentile(99) - plain.percentile(99):+.2f} ms"
    )
