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
    env: Mapping[str, str] = field(default_factory=dict)
    """Settings of the mesh beyond the benchmark's own."""


# Access tokens verified at the edge as well as by the services (docs/edge-auth.md).
_EDGE_JWT_OFF = {"EDGE_JWT": "0"}
_EDGE_JWT_ON = {"EDGE_JWT": "1"}

# The baseline has every protection off; each other setup turns one on, the last all of them.
SETUPS = (
    EdgeSetup("baseline: no mTLS inside", mtls=False, env=_EDGE_JWT_OFF),
    EdgeSetup("mTLS inside", mtls=True, env=_EDGE_JWT_OFF),
    EdgeSetup("edge JWT", mtls=False, env=_EDGE_JWT_ON),
    EdgeSetup("all: mTLS inside, edge JWT", mtls=True, env=_EDGE_JWT_ON),
)
