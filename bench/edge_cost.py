"""The edge-cost scenario's setups: the same signed-in read through meshes that differ in one
protection each, so that what each one costs shows against the same baseline in one run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EdgeSetup:
    """One mesh configuration of the edge-cost scenario."""

    label: str
    mtls: bool
    """Mutual TLS on every hop inside the mesh (edge → services → data_access)."""
    tls: bool = False
    """HTTPS between the client and the edge (the development certificate, docs/tls.md)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Settings of the mesh beyond the benchmark's own."""


# Access tokens verified at the edge as well as by the services (docs/edge-auth.md); the edge's
# rate limits (docs/rate-limits.md; the benchmark raises them so that they never refuse).
_NOTHING = {"EDGE_JWT": "0", "MESHGRAM_RATE_LIMITS": "off"}
_EDGE_JWT = {**_NOTHING, "EDGE_JWT": "1"}
_RATE_LIMITS = {"EDGE_JWT": "0"}
_EVERYTHING = {"EDGE_JWT": "1"}

# The baseline has every protection off; each other setup turns one on, the last all of them.
SETUPS = (
    EdgeSetup("baseline: nothing on", mtls=False, env=_NOTHING),
    EdgeSetup("mTLS inside", mtls=True, env=_NOTHING),
    EdgeSetup("TLS at the edge", mtls=False, tls=True, env=_NOTHING),
    EdgeSetup("edge JWT", mtls=False, env=_EDGE_JWT),
    EdgeSetup("edge rate limits", mtls=False, env=_RATE_LIMITS),
    EdgeSetup("all: mTLS inside, TLS, edge JWT, rate limits", mtls=True, tls=True, env=_EVERYTHING),
)
