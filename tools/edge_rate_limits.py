"""The edge's rate-limit filters and the shared limiter's cluster, rendered from
meshkit.rate_limits (docs/rate-limits.md).

- Groups kept per edge replica: one local_ratelimit filter each, a token bucket per client
  address (a descriptor whose address entry has no value gets a bucket per address seen).
- Shared groups: one global ratelimit filter asking the limiter (auth_svc, counting in
  PostgreSQL through data_access) with a descriptor (group, limit, client address). It waits
  at most LIMITER_TIMEOUT and lets the request through when the limiter fails or is slow
  (failure_mode_deny false): an outage of the limiter must not take login down with it, and
  auth_svc's own account defences still hold meanwhile.

Both filters sit after the JSON transcoder, when a REST call's path is already its gRPC
method's, so REST, gRPC and gRPC-web calls of a method share one bucket. The client address is
the connection's (the edge trusts no X-Forwarded-For: use_remote_address).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence

from meshkit.rate_limits import (
    CLIENT_KEY,
    DOMAIN,
    GROUP_KEY,
    LIMIT_KEY,
    MEDIA_PREFIX,
    RateLimit,
    group_methods,
)

LIMITER_CLUSTER = "rate_limiter"
# An answer from the limiter takes a database round trip; past this the request goes on.
LIMITER_TIMEOUT = "0.25s"
# Most client addresses whose buckets one local filter keeps at once (least recently used go).
MAX_CLIENTS_PER_REPLICA = 100_000
_TYPES = "type.googleapis.com/envoy.extensions"
_ON = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
_FILTER_INDENT = " " * 18
_CLUSTER_INDENT = " " * 4


def _group_actions(group: str, methods: Mapping[str, Sequence[str]]) -> list[dict[str, object]]:
    """One action per path of the group naming the group when the request is on that path (and
    producing no descriptor otherwise): exact paths, cheaper than one pattern and within RE2's
    program size; media downloads by prefix for reads."""
    matchers: list[dict[str, object]] = [{"exact": path} for path in methods[group]]
    if group == "reads":
        matchers.append({"prefix": MEDIA_PREFIX})
    return [
        {
            "header_value_match": {
                "descriptor_key": GROUP_KEY,
                "descriptor_value": group,
                "headers": [{"name": ":path", "string_match": matcher}],
            }
        }
        for matcher in matchers
    ]


def _retry_after(seconds: int) -> dict[str, object]:
    """A Retry-After header on the refusal."""
    return {
        "header": {"key": "retry-after", "value": str(seconds)},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }


def _bucket(limit: RateLimit) -> dict[str, object]:
    """A token bucket holding a whole window's requests, refilled each window."""
    return {
        "max_tokens": limit.requests,
        "tokens_per_fill": limit.requests,
        "fill_interval": f"{limit.window_seconds}s",
    }


def local_filter(limit: RateLimit, methods: Mapping[str, Sequence[str]]) -> dict[str, object]:
    """The local_ratelimit filter of one per-replica group: a bucket per client address."""
    return {
        "name": f"meshgram.rate_limit.{limit.group}",
        "typed_config": {
            "@type": f"{_TYPES}.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": f"rate_limit_{limit.group}",
            # Requests outside the group produce no descriptor and fall to this bucket, which
            # never runs dry.
            "token_bucket": {
                "max_tokens": 1_000_000_000,
                "tokens_per_fill": 1_000_000_000,
                "fill_interval": "1s",
            },
            "filter_enabled": {**_ON, "runtime_key": f"edge.rate_limit.{limit.group}.enabled"},
            "filter_enforced": {**_ON, "runtime_key": f"edge.rate_limit.{limit.group}.enforced"},
            "rate_limited_as_resource_exhausted": True,
            # A full bucket is back within one window.
            "response_headers_to_add": [_retry_after(limit.window_seconds)],
            "rate_limits": [
                {"actions": [action, {"remote_address": {}}]}
                for action in _group_actions(limit.group, methods)
            ],
            "descriptors": [
                {
                    "entries": [{"key": GROUP_KEY, "value": limit.group}, {"key": CLIENT_KEY}],
                    "token_bucket": _bucket(limit),
                }
            ],
            "max_dynamic_descriptors": MAX_CLIENTS_PER_REPLICA,
        },
    }


def shared_filter(
    limits: Sequence[RateLimit], methods: Mapping[str, Sequence[str]]
) -> dict[str, object]:
    """The global ratelimit filter asking the shared limiter about every shared group."""
    return {
        "name": "meshgram.rate_limit.shared",
        "typed_config": {
            "@type": f"{_TYPES}.filters.http.ratelimit.v3.RateLimit",
            "domain": DOMAIN,
            "timeout": LIMITER_TIMEOUT,
            "failure_mode_deny": False,
            "rate_limited_as_resource_exhausted": True,
            "rate_limit_service": {
                "grpc_service": {
                    "envoy_grpc": {"cluster_name": LIMITER_CLUSTER},
                    "timeout": LIMITER_TIMEOUT,
                },
                "transport_api_version": "V3",
            },
            "rate_limits": [
                {
                    "actions": [
                        action,
                        {
                            "generic_key": {
                                "descriptor_key": LIMIT_KEY,
                                "descriptor_value": limit.descriptor_value,
                            }
                        },
                        {"remote_address": {}},
                    ]
                }
                for limit in limits
                for action in _group_actions(limit.group, methods)
            ],
        },
    }


def render_filters(limits: Sequence[RateLimit]) -> str:
    """The HTTP filters for limits, one JSON object a line as YAML list items under
    http_filters; "" without limits."""
    methods = group_methods()
    filters = [local_filter(limit, methods) for limit in limits if not limit.shared]
    shared = [limit for limit in limits if limit.shared]
    if shared:
        filters.append(shared_filter(shared, methods))
    return "".join(f"{_FILTER_INDENT}- {json.dumps(item)}\n" for item in filters)


def render_cluster(
    limits: Sequence[RateLimit],
    endpoints: Sequence[str],
    transport_socket: Mapping[str, object] | None,
) -> str:
    """The shared limiter's cluster (HTTP/2 to endpoints, "host:port" each, over
    transport_socket when given) as a YAML list item under clusters, or "" when no limit is
    shared."""
    if not any(limit.shared for limit in limits):
        return ""
    addresses = []
    named = False
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        named = named or not _is_ip(host)
        address = {"socket_address": {"address": host, "port_value": int(port)}}
        addresses.append({"endpoint": {"address": address}})
    # DNS names (containers, Kubernetes Services) resolve to every replica behind them.
    kind = {"type": "STRICT_DNS", "dns_lookup_family": "V4_ONLY"} if named else {"type": "STATIC"}
    cluster = {
        "name": LIMITER_CLUSTER,
        # A limiter that cannot be reached is given up on quickly: the request goes on.
        "connect_timeout": LIMITER_TIMEOUT,
        **kind,
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{_TYPES}.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": LIMITER_CLUSTER,
            "endpoints": [{"lb_endpoints": addresses}],
        },
    }
    if transport_socket is not None:
        cluster["transport_socket"] = transport_socket
    return f"{_CLUSTER_INDENT}- {json.dumps(cluster)}\n"


def _is_ip(host: str) -> bool:
    """Whether host is an IP address literal (not a DNS name)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
