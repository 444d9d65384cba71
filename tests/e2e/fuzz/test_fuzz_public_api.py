"""Every public RPC fuzzed through the real edge, over native gRPC and gRPC-web (binary and
text): whatever a client sends, the answer is a deliberate status, never INTERNAL, UNKNOWN,
DATA_LOSS, UNAVAILABLE, an HTTP 5xx, a lost answer or a call that outlives its deadline. The
answers of known issues (tests.e2e.fuzz.harness.KNOWN_ISSUES) are counted, not failed.

The RPCs come from the descriptors (tests.e2e.fuzz.strategies.public_methods), so a new one is
fuzzed here without a change. MESHGRAM_FUZZ_PROFILE=long (`make fuzz`) runs many more examples.
"""

from __future__ import annotations

import grpc
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.fuzz.harness import (
    Account,
    Tally,
    call_native,
    call_web,
    fuzz_settings,
    steer,
    web_protocol,
)
from tests.e2e.fuzz.strategies import (
    PublicMethod,
    authorizations,
    public_methods,
    request_streams,
    web_requests,
)

METHODS = public_methods()


def method_id(method: PublicMethod) -> str:
    """Test id of a method: "Service.Method"."""
    return method.name.replace("/", ".")


@pytest.mark.parametrize("method", METHODS, ids=method_id)
@fuzz_settings()
@given(case=st.data())
async def test_native_grpc_answers_deliberately(
    method: PublicMethod,
    case: st.DataObject,
    fuzz_channel: grpc.aio.Channel,
    fuzz_account: Account,
    fuzz_tally: Tally,
) -> None:
    stream = case.draw(request_streams(method, fuzz_account.hints), label="requests")
    authorization = await fuzz_account.authorization(
        case.draw(authorizations(), label="authorization")
    )
    outcome = await call_native(fuzz_channel, method, stream, authorization)
    fuzz_tally.add(method, "grpc", outcome)
    steer(outcome)
    assert outcome.failure() is None, f"{method.path}: {outcome.failure()}; {outcome}"


@pytest.mark.parametrize("method", METHODS, ids=method_id)
@fuzz_settings()
@given(case=st.data())
async def test_grpc_web_answers_deliberately(
    method: PublicMethod,
    case: st.DataObject,
    fuzz_http: httpx.AsyncClient,
    fuzz_account: Account,
    fuzz_tally: Tally,
) -> None:
    request = case.draw(web_requests(method, fuzz_account.hints), label="request")
    authorization = await fuzz_account.authorization(
        case.draw(authorizations(), label="authorization")
    )
    outcome = await call_web(fuzz_http, method, request, authorization)
    fuzz_tally.add(method, web_protocol(request), outcome)
    steer(outcome)
    assert outcome.failure() is None, f"{method.path}: {outcome.failure()}; {outcome}"
