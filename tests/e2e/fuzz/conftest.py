"""Fixtures of the fuzzing suite, on top of the e2e `mesh`; every fixture is session-scoped,
as hypothesis wants for tests that run many examples.

- `fuzz_channel`: a native gRPC channel to the edge.
- `fuzz_http`: an HTTP/1.1 client for gRPC-web, as browsers use.
- `fuzz_account`: a registered user with a stored image (tests.e2e.fuzz.harness.Account).
- `fuzz_tally`: the counts per RPC, protocol and status, printed at the end of the run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from tests.e2e.fuzz.harness import Account, Tally, profile_name
from tools.mesh import Mesh

_TALLY = pytest.StashKey[Tally]()


@pytest.fixture(scope="session")
async def fuzz_channel(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    """A native gRPC channel to the edge for the session."""
    async with grpc.aio.insecure_channel(mesh.edge_address) as channel:
        yield channel


@pytest.fixture(scope="session")
async def fuzz_http(edge_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP/1.1 client pointed at the edge for the session."""
    async with httpx.AsyncClient(base_url=edge_url) as client:
        yield client


@pytest.fixture(scope="session")
async def fuzz_account(fuzz_channel: grpc.aio.Channel) -> Account:
    """A registered user with one stored image."""
    return await Account.open(fuzz_channel)


@pytest.fixture(scope="session")
def fuzz_tally(pytestconfig: pytest.Config) -> Tally:
    """The session's counts, kept where the terminal summary finds them."""
    return pytestconfig.stash.setdefault(_TALLY, Tally())


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print the counts per RPC, protocol and status when fuzzing ran."""
    tally = config.stash.get(_TALLY, None)
    if not tally:
        return
    terminalreporter.write_sep("-", f"fuzzed calls per RPC, protocol and status ({profile_name()})")
    for line in tally.table():
        terminalreporter.write_line(line)
