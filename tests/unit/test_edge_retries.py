"""The edge retries exactly the calls the protos mark safe to repeat, on another replica."""

from __future__ import annotations

from typing import Any

import yaml
from google.protobuf.descriptor_pb2 import MethodOptions

from meshgram.auth.v1 import auth_pb2
from meshgram.storage.v1 import storage_pb2
from meshgram.user.v1 import user_pb2
from tools.edge import EdgeConfig, render, retried_methods

CONFIG = EdgeConfig(
    listen_host="127.0.0.1",
    listen_port=8080,
    admin_port=9901,
    cors_origins=("http://localhost:5173",),
    upstreams={
        name: ["127.0.0.1:1", "127.0.0.1:2"] for name in ("auth_svc", "user_svc", "storage_svc")
    },
)


def routes() -> list[dict[str, Any]]:
    """The edge's routes, in order."""
    document = yaml.safe_load(render(CONFIG))
    manager = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    found: list[dict[str, Any]] = manager["typed_config"]["route_config"]["virtual_hosts"][0][
        "routes"
    ]
    return found


def marked() -> set[str]:
    """Every public method whose proto marks it NO_SIDE_EFFECTS or IDEMPOTENT."""
    return {
        f"/{service.full_name}/{method.name}"
        for file in (auth_pb2.DESCRIPTOR, user_pb2.DESCRIPTOR, storage_pb2.DESCRIPTOR)
        for service in file.services_by_name.values()
        for method in service.methods
        if method.GetOptions().idempotency_level != MethodOptions.IDEMPOTENCY_UNKNOWN
    }


def test_reads_are_marked_and_writes_that_create_are_not() -> None:
    retried = {f"/{s}/{m}" for s, methods in retried_methods().items() for m in methods}
    assert retried == marked()
    for read in ("UserService/GetProfile", "StorageService/DownloadImage", "AuthService/GetJwks"):
        assert any(path.endswith(read) for path in retried), read
    # Repeating these would do something twice (a second account, image or login record).
    for write in ("AuthService/Register", "AuthService/Login", "StorageService/UploadImage"):
        assert not any(path.endswith(write) for path in retried), write


def test_marked_calls_retry_on_another_replica_and_others_only_when_never_sent() -> None:
    by_path = {r["match"].get("path"): r for r in routes() if "route" in r}
    for path in marked():
        policy = by_path[path]["route"]["retry_policy"]
        assert set(policy["retry_on"].split(",")) >= {"unavailable", "reset", "connect-failure"}
        hosts = [p["name"] for p in policy["retry_host_predicate"]]
        assert hosts == ["envoy.retry_host_predicates.previous_hosts"]
    prefixes = [r for r in routes() if r["match"].get("prefix", "").startswith("/meshgram.")]
    assert len(prefixes) == 3
    for route in prefixes:
        assert route["route"]["retry_policy"]["retry_on"] == "connect-failure,refused-stream"
    # The specific routes come before the per-service routes that would otherwise catch them.
    order = [r["match"].get("path") or r["match"].get("prefix") for r in routes()]
    first_prefix = min(order.index(r["match"]["prefix"]) for r in prefixes)
    assert all(order.index(path) < first_prefix for path in marked())
