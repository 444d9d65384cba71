"""Traces an operator can follow: one REST call through the edge is one trace, from Envoy's span
through the service and data_access down to the SQL statement, joined to the log lines by the
request id and the trace id; and no password or token ever lands in a span."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.support import own_mesh, rest_sign_in, wait_for_request
from tools.mesh import Mesh
from tools.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

SERVER = 2  # SPAN_KIND_SERVER
CLIENT = 3  # SPAN_KIND_CLIENT


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """The OTLP/gRPC receiver every process of the traced mesh exports to."""
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_mesh(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> Iterator[Mesh]:
    """A mesh of its own that traces every request to the receiver."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        # Spans leave the services within a fifth of a second rather than five.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        # Successful calls get their access line too (at DEBUG).
        "USER_LOG_LEVEL": "DEBUG",
    }
    with own_mesh(database_url, tmp_path_factory.mktemp("traced"), env) as mesh:
        yield mesh


@pytest.fixture
def web(traced_mesh: Mesh) -> Iterator[httpx.Client]:
    """A REST client of the traced mesh's edge."""
    with httpx.Client(base_url=f"http://{traced_mesh.edge_address}", timeout=30) as client:
        yield client


def trace_of(receiver: OtlpReceiver, request_id: str) -> list[ReceivedSpan]:
    """Every span of the trace whose edge span carries request_id, once the edge, user_svc,
    data_access and an SQL statement have all reported."""

    def trace_id(spans: list[ReceivedSpan]) -> str | None:
        for span in spans:
            if span.service == "edge" and span.attributes.get("guid:x-request-id") == request_id:
                return span.trace_id
        return None

    def complete(spans: list[ReceivedSpan]) -> bool:
        wanted = trace_id(spans)
        found = [span for span in spans if span.trace_id == wanted]
        return (
            wanted is not None
            and {"edge", "user_svc", "data_access"} <= {span.service for span in found}
            and any("db.statement" in span.attributes for span in found)
        )

    spans = receiver.wait_for(complete)
    wanted = trace_id(spans)
    assert wanted is not None, "the edge reported no span for the request"
    return [span for span in spans if span.trace_id == wanted]


def ancestry(span: ReceivedSpan, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """span, its parent, the parent's parent... up to the root of the trace."""
    by_id = {each.span_id: each for each in spans}
    chain = [span]
    while chain[-1].parent_span_id:
        parent = by_id.get(chain[-1].parent_span_id)
        assert parent is not None, f"the parent of {chain[-1].name} never arrived"
        chain.append(parent)
    return chain


def signed_in_read(web: httpx.Client) -> httpx.Response:
    """A new user's read of its own followers, a call that reaches user_svc, data_access and
    SQL; its answer, checked to be 200."""
    user, tokens = rest_sign_in(web)
    reply = web.get(
        f"/v1/profiles/{user.username}/followers",
        headers={"authorization": f"Bearer {tokens['accessToken']}"},
    )
    assert reply.status_code == 200, reply.text
    return reply


def test_one_rest_call_is_one_trace_from_the_edge_to_the_sql(
    web: httpx.Client, receiver: OtlpReceiver
) -> None:
    reply = signed_in_read(web)

    spans = trace_of(receiver, reply.headers["x-request-id"])
    [statement, *_] = [span for span in spans if "db.statement" in span.attributes]
    chain = ancestry(statement, spans)
    # SQL <- data_access's server span <- user_svc's client span <- user_svc's server span
    # <- the edge's span, which starts the trace.
    assert [(span.service, span.kind) for span in chain] == [
        ("data_access", CLIENT),
        ("data_access", SERVER),
        ("user_svc", CLIENT),
        ("user_svc", SERVER),
        ("edge", SERVER),
    ]
    assert chain[-1].parent_span_id == ""
    assert chain[1].name.startswith("meshgram.dataaccess.v1.")
    assert chain[3].name == "meshgram.user.v1.UserService/ListFollowers"
    assert chain[3].attributes["rpc.grpc.status_code"] == 0
    assert statement.attributes["db.system"] == "postgresql"


def test_the_service_log_line_carries_the_request_id_and_the_trace_id(
    traced_mesh: Mesh, web: httpx.Client, receiver: OtlpReceiver
) -> None:
    reply = signed_in_read(web)
    request_id = reply.headers["x-request-id"]

    spans = trace_of(receiver, request_id)
    [server] = [span for span in spans if span.service == "user_svc" and span.kind == SERVER]
    [line] = [
        line
        for line in wait_for_request(traced_mesh, "user_svc", request_id)
        if line.get("method") == "/meshgram.user.v1.UserService/ListFollowers"
    ]
    assert line["trace_id"] == server.trace_id
    assert line["span_id"] == server.span_id
    assert server.attributes["meshgram.request_id"] == request_id


def test_a_client_mistake_is_answered_as_ever_and_traced_with_its_code(
    web: httpx.Client, receiver: OtlpReceiver
) -> None:
    _, tokens = rest_sign_in(web)
    reply = web.get(
        "/v1/profiles/nobody_by_this_name",
        headers={"authorization": f"Bearer {tokens['accessToken']}"},
    )
    assert reply.status_code == 404, reply.text
    assert reply.json()["code"] == 5

    spans = trace_of(receiver, reply.headers["x-request-id"])
    by_place = {(span.service, span.kind): span for span in spans if span.kind in (SERVER, CLIENT)}
    # NOT_FOUND (5) at every hop: the edge's, the service's and data_access's.
    assert by_place[("user_svc", SERVER)].attributes["rpc.grpc.status_code"] == 5
    assert by_place[("user_svc", CLIENT)].attributes["rpc.grpc.status_code"] == 5
    assert by_place[("data_access", SERVER)].attributes["rpc.grpc.status_code"] == 5
    assert by_place[("edge", SERVER)].attributes["http.status_code"] == "404"


def test_no_password_or_token_reaches_a_span(web: httpx.Client, receiver: OtlpReceiver) -> None:
    user, tokens = rest_sign_in(web)
    bearer = {"authorization": f"Bearer {tokens['accessToken']}"}
    refreshed = web.post("/v1/auth:refresh", json={"refreshToken": tokens["refreshToken"]})
    assert refreshed.status_code == 200, refreshed.text
    reply = web.get(f"/v1/profiles/{user.username}", headers=bearer)
    assert reply.status_code == 200, reply.text

    trace_of(receiver, reply.headers["x-request-id"])
    secrets = [
        user.password,
        tokens["accessToken"],
        tokens["refreshToken"],
        refreshed.json()["tokens"]["accessToken"],
        refreshed.json()["tokens"]["refreshToken"],
    ]
    spans = receiver.spans()
    # Logging in and refreshing were traced too: their spans are among those scanned.
    assert any(span.name == "meshgram.auth.v1.AuthService/Login" for span in spans)
    exported = json.dumps([[span.name, span.attributes, span.resource] for span in spans])
    for secret in secrets:
        assert secret not in exported
