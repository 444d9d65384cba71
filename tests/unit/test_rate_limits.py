"""The edge's rate-limit table, its setting, and the Envoy configuration rendered from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshgram.auth.v1 import auth_pb2
from meshgram.storage.v1 import storage_pb2
from meshgram.user.v1 import user_pb2
from meshkit import rate_limits
from meshkit.rate_limits import DEFAULT_LIMITS, GROUPS, RateLimit, group_methods, parse_limits
from tests.unit.edge_support import envoy_refusal, loopback_config
from tools import edge
from tools.edge_rate_limits import LIMITER_CLUSTER

AUTH = "/meshgram.auth.v1.AuthService"


def _public_methods() -> set[str]:
    """Every public method's gRPC path."""
    return {
        f"/{service.full_name}/{method.name}"
        for file in (auth_pb2.DESCRIPTOR, user_pb2.DESCRIPTOR, storage_pb2.DESCRIPTOR)
        for service in file.services_by_name.values()
        for method in service.methods
    }


def _limit(group: str, limits: tuple[RateLimit, ...] = DEFAULT_LIMITS) -> RateLimit:
    """The limit of group."""
    [found] = [limit for limit in limits if limit.group == group]
    return found


def test_every_public_method_is_in_exactly_one_group() -> None:
    methods = group_methods()
    listed = [path for paths in methods.values() for path in paths]
    assert sorted(listed) == sorted(_public_methods())
    assert set(methods) == set(GROUPS)


def test_the_account_doors_are_strict_and_shared_across_edge_replicas() -> None:
    methods = group_methods()
    assert f"{AUTH}/Login" in methods["login"]
    assert f"{AUTH}/Register" in methods["register"]
    assert f"{AUTH}/RequestPasswordReset" in methods["password_reset"]
    assert f"{AUTH}/ResendVerificationEmail" in methods["resend_mail"]
    assert f"{AUTH}/VerifyMfa" in methods["mfa"]
    for group in ("login", "register", "password_reset", "resend_mail", "mfa"):
        strict = _limit(group)
        assert strict.shared
        # Stricter than the flood guard of reads, per second.
        reads = _limit("reads")
        assert strict.requests / strict.window_seconds < reads.requests / reads.window_seconds


def test_reads_and_writes_are_kept_per_replica_and_reads_are_looser() -> None:
    reads, writes = _limit("reads"), _limit("writes")
    assert not reads.shared
    assert not writes.shared
    assert reads.requests / reads.window_seconds > writes.requests / writes.window_seconds
    assert "/meshgram.user.v1.UserService/GetProfile" in group_methods()["reads"]
    assert "/meshgram.user.v1.UserService/FollowProfile" in group_methods()["writes"]


def test_every_limit_says_why() -> None:
    assert all(len(limit.reason) > 20 for limit in DEFAULT_LIMITS)


def test_overrides_change_only_the_groups_named_with_any_window_unit() -> None:
    limits = parse_limits("login=5/1m, reads=100/10s,register=2/h,mfa=7/1d,writes=9/30")
    assert (_limit("login", limits).requests, _limit("login", limits).window_seconds) == (5, 60)
    assert _limit("reads", limits).window_seconds == 10
    assert _limit("register", limits).window_seconds == 3600
    assert _limit("mfa", limits).window_seconds == 86400
    assert _limit("writes", limits).window_seconds == 30
    assert _limit("password_reset", limits) == _limit("password_reset")


def test_off_turns_every_limit_off_and_empty_keeps_the_defaults() -> None:
    assert parse_limits("off") == ()
    assert parse_limits(" OFF ") == ()
    assert parse_limits("") == DEFAULT_LIMITS
    assert rate_limits.limits_from_env({}) == DEFAULT_LIMITS


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("login", "is not <group>=<requests>/<window>"),
        ("login=5", "is not <group>=<requests>/<window>"),
        ("login=five/1m", "is not <group>=<requests>/<window>"),
        ("logins=5/1m", "unknown group 'logins'"),
        ("login=5/2d", "window of 1 s to 1 day"),
        ("login=0/1m", "1 to 10^9 requests"),
    ],
)
def test_a_bad_setting_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match="MESHGRAM_RATE_LIMITS") as raised:
        parse_limits(text)
    assert says in str(raised.value)


def test_scaled_multiplies_every_limit_and_reads_back() -> None:
    limits = parse_limits(rate_limits.scaled(1000))
    for limit, default in zip(limits, DEFAULT_LIMITS, strict=True):
        assert limit.requests == default.requests * 1000
        assert limit.window_seconds == default.window_seconds


def _document(**changes: Any) -> dict[str, Any]:
    """The rendered edge configuration as data."""
    loaded: dict[str, Any] = yaml.safe_load(edge.render(loopback_config(**changes)))
    return loaded


def _filters(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The edge listener's HTTP filters, in order."""
    manager = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    found: list[dict[str, Any]] = manager["typed_config"]["http_filters"]
    return found


def _clusters(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The clusters by name."""
    return {cluster["name"]: cluster for cluster in document["static_resources"]["clusters"]}


def test_the_limits_run_after_the_transcoder_so_every_door_shares_a_bucket() -> None:
    names = [item["name"] for item in _filters(_document())]
    transcoder = names.index("envoy.filters.http.grpc_json_transcoder")
    limited = [i for i, name in enumerate(names) if name.startswith("meshgram.rate_limit.")]
    assert len(limited) == 3  # reads, writes and the shared filter
    assert all(transcoder < i < names.index("envoy.filters.http.router") for i in limited)


def test_the_shared_limiter_is_asked_briefly_and_fails_open() -> None:
    [shared] = [f for f in _filters(_document()) if f["name"] == "meshgram.rate_limit.shared"]
    config = shared["typed_config"]
    assert config["failure_mode_deny"] is False
    assert config["timeout"] == "0.25s"
    assert config["rate_limited_as_resource_exhausted"] is True
    assert config["rate_limit_service"]["grpc_service"]["envoy_grpc"] == {
        "cluster_name": LIMITER_CLUSTER
    }
    # Login's descriptor: the group, its limit and the client's address.
    [login] = [
        entry["actions"]
        for entry in config["rate_limits"]
        if entry["actions"][0]["header_value_match"]["headers"][0]["string_match"]
        == {"exact": f"{AUTH}/Login"}
    ]
    assert login[0]["header_value_match"]["descriptor_value"] == "login"
    assert login[1] == {"generic_key": {"descriptor_key": "limit", "descriptor_value": "30/300"}}
    assert login[2] == {"remote_address": {}}


def test_a_local_limit_keeps_a_bucket_per_client_address_with_retry_after() -> None:
    limits = parse_limits("reads=4/10s")
    [reads] = [
        f
        for f in _filters(_document(rate_limits=limits))
        if f["name"] == "meshgram.rate_limit.reads"
    ]
    config = reads["typed_config"]
    [descriptor] = config["descriptors"]
    # No value for the address: each address seen gets a bucket of its own.
    assert descriptor["entries"] == [{"key": "group", "value": "reads"}, {"key": "remote_address"}]
    assert descriptor["token_bucket"] == {
        "max_tokens": 4,
        "tokens_per_fill": 4,
        "fill_interval": "10s",
    }
    assert config["response_headers_to_add"][0]["header"] == {"key": "retry-after", "value": "10"}
    matched = [
        entry["actions"][0]["header_value_match"]["headers"][0]["string_match"]
        for entry in config["rate_limits"]
    ]
    assert {"prefix": "/media/"} in matched
    assert {"exact": "/meshgram.user.v1.UserService/GetProfile"} in matched


def test_the_limiter_is_auth_svc_unless_told_otherwise() -> None:
    default = _clusters(_document(upstreams={n: ["127.0.0.1:7"] for n in edge.HEALTH_SERVICES}))
    endpoint = default[LIMITER_CLUSTER]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"]["socket_address"]["port_value"] == 7
    told = _clusters(_document(rate_limiter=("limiter.internal:8081",)))[LIMITER_CLUSTER]
    assert told["type"] == "STRICT_DNS"


def test_off_renders_no_rate_limit_filter_nor_limiter() -> None:
    document = _document(rate_limits=())
    assert not [f for f in _filters(document) if f["name"].startswith("meshgram.rate_limit.")]
    assert LIMITER_CLUSTER not in _clusters(document)


def test_a_refusal_is_rate_limited_with_a_readable_message() -> None:
    reply = edge.LOCAL_REPLIES[429]
    assert (reply.code, str(reply.reason)) == (8, "RATE_LIMITED")
    assert "Retry-After" in reply.message


def test_envoy_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    path = edge.write(
        loopback_config(
            rate_limits=parse_limits("login=1/1s,reads=1/1s"), media_cache_dir=tmp_path / "cache"
        ),
        tmp_path / "envoy.yaml",
    )
    assert envoy_refusal(path) == ""
