"""Render the Envoy edge configuration from envoy/*.yaml.tmpl."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from google.api import annotations_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

from meshgram.auth.v1 import auth_pb2
from meshgram.storage.v1 import storage_pb2
from meshgram.user.v1 import user_pb2
from meshkit.public_api import STORAGE_SERVICE
from meshkit.rate_limits import DEFAULT_LIMITS, RateLimit
from meshkit.reasons import ERROR_DOMAIN, Reason
from tools import edge_jwt, edge_tls
from tools.docs_ui import SWAGGER_UI_BUNDLE, SWAGGER_UI_CSS
from tools.edge_hosts import any_host_access, virtual_hosts
from tools.edge_jwt import EdgeJwt
from tools.edge_rate_limits import render_cluster, render_filters
from tools.edge_tls import DownstreamTls
from tools.edge_tracing import EdgeTracing, collector_cluster, tracing_block
from tools.http_rules import bindings, bound_fields

ROOT = Path(__file__).resolve().parent.parent
ENVOY_DIR = ROOT / "envoy"
LUA_DIR = ENVOY_DIR / "lua"
DESCRIPTOR = ENVOY_DIR / "api_descriptor.pb"
# The files Envoy serves itself, by template placeholder; it reads them when it starts.
SERVED_FILES = {
    # The API reference page at /docs: ours, the generated OpenAPI document and Swagger UI's
    # (unpacked by `make docs-ui`).
    "DOCS_PAGE": ENVOY_DIR / "docs-ui" / "index.html",
    "DOCS_INITIALIZER": ENVOY_DIR / "docs-ui" / "swagger-initializer.js",
    "DOCS_OPENAPI": ROOT / "docs" / "openapi.json",
    "SWAGGER_UI_BUNDLE": SWAGGER_UI_BUNDLE,
    "SWAGGER_UI_CSS": SWAGGER_UI_CSS,
    # The page that links in auth_svc's mails open (verify an address, reset a password).
    "ACCOUNT_PAGE": ENVOY_DIR / "account" / "index.html",
    "ACCOUNT_SCRIPT": ENVOY_DIR / "account" / "account.js",
    "ACCOUNT_STYLE": ENVOY_DIR / "account" / "account.css",
}

# Largest request header block the edge accepts (envoy/lua/answers.lua answers 431 past it, as
# RESOURCE_EXHAUSTED for gRPC), and the hard limit of Envoy's codec above it. The services accept
# more than the codec lets through (meshkit.server), so a request is refused in one place only.
MAX_HEADER_BYTES = 16 * 1024
CODEC_MAX_HEADERS_KB = 60


@dataclass(frozen=True)
class LocalReply:
    """How the edge labels one of its own HTTP answers: a gRPC code and an ErrorInfo reason."""

    code: int
    reason: Reason
    message: str = ""
    """Replaces the text of the answer (the filter's own, when empty)."""


# The edge's own answers (unknown path, bad JSON, too large, no upstream...): gRPC clients get
# the code as grpc-status, REST clients in the JSON body with the reason in an ErrorInfo. Any
# other status gets UNKNOWN (2). Envoy's default for gRPC would say INTERNAL for a bad request.
LOCAL_REPLIES = {
    400: LocalReply(3, Reason.MALFORMED_REQUEST),  # unreadable body, unknown query parameter
    404: LocalReply(12, Reason.ROUTE_NOT_FOUND),  # also a gRPC method called without POST
    408: LocalReply(4, Reason.REQUEST_TIMEOUT),  # the request did not arrive in time
    413: LocalReply(8, Reason.REQUEST_TOO_LARGE),
    415: LocalReply(3, Reason.CONTENT_ENCODING_UNSUPPORTED),  # a compressed REST body
    # The rate limits (docs/rate-limits.md); Retry-After says when to try again.
    429: LocalReply(
        8,
        Reason.RATE_LIMITED,
        "too many requests from this address: try again after the seconds in Retry-After",
    ),
    431: LocalReply(8, Reason.HEADERS_TOO_LARGE),
    500: LocalReply(13, Reason.EDGE_ERROR),
    501: LocalReply(12, Reason.MALFORMED_REQUEST),  # a transfer coding the edge does not know
    502: LocalReply(14, Reason.SERVICE_UNAVAILABLE),  # the service hung up or answered garbage
    503: LocalReply(14, Reason.SERVICE_UNAVAILABLE),  # no healthy service
    504: LocalReply(4, Reason.SERVICE_TIMEOUT),
}

_PUBLIC_FILES = (auth_pb2.DESCRIPTOR, user_pb2.DESCRIPTOR, storage_pb2.DESCRIPTOR)

# Cluster name -> the gRPC service whose health decides whether Envoy routes to an endpoint.
HEALTH_SERVICES = {
    "auth_svc": "meshgram.auth.v1.AuthService",
    "user_svc": "meshgram.user.v1.UserService",
    "storage_svc": "meshgram.storage.v1.StorageService",
}


@dataclass(frozen=True)
class UpstreamTls:
    """The edge's side of mutual TLS towards the services: its own workload certificate, the
    CA it trusts, and the SPIFFE identity each cluster's endpoints must prove."""

    cert: Path
    key: Path
    ca: Path
    identities: Mapping[str, str]
    """Cluster name -> the URI SAN its servers' certificates must carry."""


@dataclass(frozen=True)
class EdgeConfig:
    """What the edge needs to know: where to listen and where each public service runs."""

    listen_host: str
    listen_port: int
    admin_port: int
    cors_origins: Sequence[str]
    upstreams: Mapping[str, Sequence[str]]
    """Cluster name -> endpoint addresses ("host:port"); several make Envoy balance."""
    max_connections: int = 10_000
    media_cache_dir: Path = ROOT / "var" / "edge-cache"
    """Folder of the edge's media cache; one per Envoy, made when missing."""
    media_cache_bytes: int = 256 * 1024 * 1024
    """Most bytes the media cache keeps on disk before evicting the least recently used."""
    media_cache_entries: int = 20_000
    """Most files the media cache keeps."""
    upstream_tls: UpstreamTls | None = None
    """Mutual TLS to every upstream (health checks included); None: plaintext (loopback only)."""
    tracing: EdgeTracing | None = None
    """Where the edge exports its spans (tools/edge_tracing.py); None: the edge does not trace."""
    downstream_tls: DownstreamTls | None = None
    """HTTPS for clients on its own port, listen_port redirecting there; None: plain HTTP."""
    downstream_tls_secret: Path = ROOT / "var" / "run" / "edge-certificate.json"
    """The file through which Envoy reads (and re-reads) the HTTPS certificate."""
    jwt: EdgeJwt = field(default_factory=EdgeJwt)
    """Access tokens verified at the edge (tools/edge_jwt.py), or not (EDGE_JWT=0)."""
    rate_limits: Sequence[RateLimit] = DEFAULT_LIMITS
    """The limits per route group and client address (docs/rate-limits.md); () turns them off."""
    rate_limiter: Sequence[str] = ()
    """Endpoints ("host:port") of the limiter keeping the shared limits; () means auth_svc's."""
    domain: str | None = None
    """EDGE_DOMAIN: serve auth., api. and media. of it by host (tools/edge_hosts.py); None:
    everything on any Host (local development)."""


# Route settings of each public service's calls (the routes of envoy.yaml.tmpl say why).
_SERVICE_ROUTES = {
    "meshgram.auth.v1.AuthService": ("auth_svc", "15s"),
    "meshgram.user.v1.UserService": ("user_svc", "15s"),
    "meshgram.storage.v1.StorageService": ("storage_svc", "120s"),
}


def retried_methods(files: Iterable[object] = _PUBLIC_FILES) -> dict[str, list[str]]:
    """Map each public service to the methods its proto marks safe to repeat
    (idempotency_level NO_SIDE_EFFECTS or IDEMPOTENT), in proto order."""
    retried: dict[str, list[str]] = {}
    for file in files:
        for service in file.services_by_name.values():  # type: ignore[attr-defined]
            names = [
                method.name
                for method in service.methods
                if method.GetOptions().idempotency_level != MethodOptions.IDEMPOTENCY_UNKNOWN
            ]
            if names:
                retried[service.full_name] = names
    return retried


# A failed attempt of a call that is safe to repeat goes to another replica: the replica was
# unreachable, reset the stream (it died or restarted mid-call) or answered UNAVAILABLE (it is
# shutting down, or lost a dependency). Twice at most, soon: a client's deadline still holds.
_PREVIOUS_HOSTS = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)
_RETRY_POLICY = f"""\
                            retry_policy:
                              retry_on: unavailable,reset,connect-failure,refused-stream
                              num_retries: 2
                              retry_back_off: {{base_interval: 0.025s, max_interval: 0.25s}}
                              host_selection_retry_max_attempts: 3
                              retry_host_predicate:
                                - name: envoy.retry_host_predicates.previous_hosts
                                  typed_config: {{"@type": {_PREVIOUS_HOSTS}}}
"""


def _retry_routes(retried: Mapping[str, Sequence[str]]) -> str:
    """The routes of the methods safe to repeat: like their service's route, plus the retry
    policy that sends a failed attempt to another replica."""
    routes = []
    for service, methods in sorted(retried.items()):
        cluster, timeout = _SERVICE_ROUTES[service]
        # One exact path per method: cheaper to match than a pattern, and no regex limits.
        routes += [
            f"                        - match: {{path: {json.dumps(f'/{service}/{method}')}}}\n"
            "                          route:\n"
            f"                            cluster: {cluster}\n"
            f"                            timeout: {timeout}\n"
            "                            max_stream_duration: "
            f"{{max_stream_duration: {timeout}, grpc_timeout_header_max: {timeout}}}\n"
            + _RETRY_POLICY
            for method in methods
        ]
    return "".join(routes)


def render(config: EdgeConfig) -> str:
    """Return the Envoy YAML for config."""
    clusters = [
        _cluster(name, config.upstreams[name], config.upstream_tls) for name in HEALTH_SERVICES
    ]
    origins = [{"exact": origin} for origin in config.cors_origins]
    upstream_lua = Template((LUA_DIR / "upstream.lua").read_text()).substitute(
        BOUND=_lua_table(_bound_lua(query_bound_fields()))
    )
    # The media listener's one route: downloads, retried like the edge's route for them.
    media_retried = "DownloadImage" in retried_methods().get(STORAGE_SERVICE, [])
    answers_lua = Template((LUA_DIR / "answers.lua").read_text()).substitute(
        CODES=_lua_table({f"[{status}]": f'"{r.code}"' for status, r in LOCAL_REPLIES.items()}),
        ROUTES=_routes_lua(rest_routes()),
        MAX_HEADER_BYTES=MAX_HEADER_BYTES,
        NOT_ON_THIS_HOST=NOT_ON_THIS_HOST.code,
    )
    missing = [str(path) for path in SERVED_FILES.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"run `make docs-ui` first; missing: {', '.join(missing)}")
    template = Template((ENVOY_DIR / "envoy.yaml.tmpl").read_text())
    return template.substitute(
        ADMIN_PORT=config.admin_port,
        MAX_CONNECTIONS=config.max_connections,
        CODEC_MAX_HEADERS_KB=CODEC_MAX_HEADERS_KB,
        LISTEN_HOST=config.listen_host,
        LISTEN_PORT=_https_port(config),
        DOWNSTREAM_TLS=edge_tls.transport_socket(
            config.downstream_tls, config.downstream_tls_secret
        ),
        HSTS=edge_tls.hsts_headers(config.downstream_tls),
        HTTP_REDIRECT_LISTENER=edge_tls.redirect_listener(
            config.downstream_tls, config.listen_host, config.listen_port
        ),
        CORS_ORIGINS=json.dumps(origins),
        DESCRIPTOR=str(DESCRIPTOR),
        STATUS_MAPPERS=_status_mappers(),
        JWT_MAPPERS=edge_jwt.mappers(_GRPC_CLIENT) if config.jwt.enabled else "",
        JWT_FILTERS=edge_jwt.filters(config.jwt),
        JWT_LISTENERS=edge_jwt.listeners(config.jwt),
        JWT_CLUSTERS=edge_jwt.clusters(config.jwt),
        ANSWERS_LUA=json.dumps(answers_lua),
        UPSTREAM_LUA=json.dumps(upstream_lua),
        CLUSTERS="".join(clusters) + collector_cluster(config.tracing),
        TRACING=tracing_block(config.tracing),
        RATE_LIMIT_FILTERS=render_filters(config.rate_limits),
        RATE_LIMIT_CLUSTER=render_cluster(
            config.rate_limits,
            config.rate_limiter or config.upstreams["auth_svc"],
            # The limiter is served by auth_svc: its servers prove auth_svc's identity.
            tls_socket("auth_svc", config.upstream_tls),
        ),
        RETRY_ROUTES=_retry_routes(retried_methods()),
        ANY_HOST_ACCESS=any_host_access(config.domain),
        HOST_VHOSTS=virtual_hosts(config.domain, _PUBLIC_FILES),
        MEDIA_LUA=json.dumps((LUA_DIR / "media.lua").read_text()),
        MEDIA_RETRY_POLICY=_RETRY_POLICY if media_retried else "",
        MEDIA_CACHE_DIR=json.dumps(str(config.media_cache_dir)),
        MEDIA_CACHE_BYTES=config.media_cache_bytes,
        MEDIA_CACHE_ENTRIES=config.media_cache_entries,
        **{name: json.dumps(str(path)) for name, path in SERVED_FILES.items()},
    )


def _https_port(config: EdgeConfig) -> int:
    """The port of the edge's main listener: the HTTPS port when TLS is on (listen_port then
    only redirects), else listen_port."""
    return config.listen_port if config.downstream_tls is None else config.downstream_tls.https_port


def query_bound_fields(files: Iterable[object] = _PUBLIC_FILES) -> dict[str, set[str] | None]:
    """Map each REST-mapped method's gRPC path to the top-level request fields its path or body
    binds (proto and JSON names), or None when the body binds them all."""
    bound: dict[str, set[str] | None] = {}
    for file in files:
        for service in file.services_by_name.values():  # type: ignore[attr-defined]
            for method in service.methods:
                fields = _bound_by_rules(method)
                if fields is None or fields:
                    bound[f"/{service.full_name}/{method.name}"] = fields
    return bound


def rest_routes(files: Iterable[object] = _PUBLIC_FILES) -> dict[str, set[str]]:
    """Map each REST path template of the public API to the HTTP verbs it is served with."""
    routes: dict[str, set[str]] = {}
    for file in files:
        for service in file.services_by_name.values():  # type: ignore[attr-defined]
            for method in service.methods:
                for binding in bindings(method.GetOptions().Extensions[annotations_pb2.http]):
                    routes.setdefault(binding.path, set()).add(binding.verb)
    return routes


def _routes_lua(routes: Mapping[str, set[str]]) -> str:
    """rest_routes() as a Lua list of {pattern, verbs}: each template as an anchored Lua pattern
    in which a variable matches one path segment short of a custom verb (":download")."""
    entries = []
    for template, verbs in sorted(routes.items()):
        parts = re.split(r"(\{[^}]*\})", template)
        pattern = "".join(
            "[^/:]+" if part.startswith("{") else re.sub(r"([^A-Za-z0-9/_:])", r"%\1", part)
            for part in parts
        )
        listed = ", ".join(json.dumps(verb) for verb in sorted(verbs))
        entries.append(f"  {{pattern = {json.dumps(f'^{pattern}$')}, verbs = {{{listed}}}}},")
    return "{\n" + "\n".join(entries) + "\n}"


def _bound_by_rules(method: MethodDescriptor) -> set[str] | None:
    """Top-level fields bound by a method's http rules (additional bindings included), by proto
    and JSON name."""
    tops = bound_fields(method.GetOptions().Extensions[annotations_pb2.http])
    if tops is None:
        return None
    fields = [method.input_type.fields_by_name[top] for top in tops]
    return {name for field in fields for name in (field.name, field.json_name)}


def _bound_lua(bound: Mapping[str, set[str] | None]) -> dict[str, str]:
    """query_bound_fields() as Lua table entries: path -> "*" or a set of names."""
    entries = {}
    for path, names in bound.items():
        members = ", ".join(f"[{json.dumps(name)}] = true" for name in sorted(names or ()))
        entries[f"[{json.dumps(path)}]"] = '"*"' if names is None else f"{{{members}}}"
    return entries


def _lua_table(entries: Mapping[str, str]) -> str:
    """A Lua table literal from keys and values already written in Lua."""
    lines = [f"  {key} = {value}," for key, value in sorted(entries.items())]
    return "{\n" + "\n".join(lines) + "\n}"


# Local replies to gRPC and gRPC-web clients. A REST request is gRPC too once transcoded, but
# it still carries the path it came with.
_GRPC_CLIENT = [
    {
        "header_filter": {
            "header": {"name": "content-type", "string_match": {"prefix": "application/grpc"}}
        }
    },
    {
        "header_filter": {
            "header": {"name": "x-envoy-original-path", "present_match": True, "invert_match": True}
        }
    },
]


def _status_mappers() -> str:
    """local_reply_config mappers giving each of the edge's own answers its gRPC code: as
    grpc-status with a plain grpc-message for gRPC clients, as JSON for everyone else."""
    mappers = _host_mappers()
    for status, reply in LOCAL_REPLIES.items():
        same_status = {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ",
                    "value": {"default_value": status, "runtime_key": f"edge.reply.{status}"},
                }
            }
        }
        body = {"body": {"inline_string": reply.message}} if reply.message else {}
        mappers.append(
            {
                "filter": {"and_filter": {"filters": [*_GRPC_CLIENT, same_status]}},
                **body,
                "body_format_override": {
                    "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"}
                },
                "headers_to_add": [
                    {
                        "header": {"key": "grpc-status", "value": str(reply.code)},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
            }
        )
        mappers.append(
            {
                "filter": same_status,
                **body,
                "body_format_override": {
                    "json_format": _json_error(reply.code, reply.reason),
                    "content_type": "application/json",
                },
            }
        )
    # Any other answer to a gRPC client: Envoy's own code, with a plain message.
    mappers.append(
        {
            "filter": {"and_filter": {"filters": _GRPC_CLIENT}},
            "body_format_override": {"text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"}},
        }
    )
    # JSON is YAML: one mapper a line, indented under "mappers:".
    return "\n".join(f"                    - {json.dumps(mapper)}" for mapper in mappers)


# A request for a path its Host does not serve: refused by that host's access rule (the RBAC
# filter, whose own answer would be 403 "RBAC: access denied"), told by its response details
# (its dynamic metadata is set only after the reply is composed).
_NOT_HERE = {
    "extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3."
            "ExpressionFilter",
            "expression": "response.code_details.startsWith('rbac_access_denied')",
        },
    }
}
NOT_ON_THIS_HOST = LocalReply(5, Reason.NOT_ON_THIS_HOST)
_NOT_HERE_MESSAGE = "this host does not serve this path (see docs/routing.md)"


def _host_mappers() -> list[dict[str, object]]:
    """local_reply_config mappers for routing by host: a 404 with NOT_FOUND (grpc-status for
    gRPC clients, JSON for everyone else) instead of Envoy's 403 or empty 404."""
    grpc_status = {"key": "grpc-status", "value": str(NOT_ON_THIS_HOST.code)}
    return [
        {
            "filter": {"and_filter": {"filters": [*_GRPC_CLIENT, _NOT_HERE]}},
            "status_code": 404,
            "body_format_override": {"text_format_source": {"inline_string": _NOT_HERE_MESSAGE}},
            "headers_to_add": [
                {"header": grpc_status, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            ],
        },
        {
            "filter": _NOT_HERE,
            "status_code": 404,
            "body_format_override": {
                "json_format": _json_error(
                    NOT_ON_THIS_HOST.code, NOT_ON_THIS_HOST.reason, _NOT_HERE_MESSAGE
                ),
                "content_type": "application/json",
            },
        },
    ]


def _json_error(
    code: int, reason: Reason, message: str = "%LOCAL_REPLY_BODY%"
) -> dict[str, object]:
    """The JSON body of an edge answer, shaped like a transcoded google.rpc.Status."""
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": str(reason)}
    return {
        "code": code,
        "message": message,
        "details": [{**info, "domain": ERROR_DOMAIN, "metadata": {}}],
    }


def write(config: EdgeConfig, path: Path) -> Path:
    """Render config into path, make the media cache's folder, and return path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Envoy does not make the folder itself (create_cache_path is not implemented in 1.40).
    config.media_cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(render(config))
    edge_tls.write_secret(config.downstream_tls, config.downstream_tls_secret)
    return path


def _transport_socket(name: str, tls: UpstreamTls | None) -> str:
    """The cluster's transport socket as a YAML line of its mapping; "" (plaintext) without
    tls."""
    socket = tls_socket(name, tls)
    # JSON is YAML: the health checks use this socket too, so they verify the same identity.
    return "" if socket is None else f"      transport_socket: {json.dumps(socket)}\n"


def tls_socket(name: str, tls: UpstreamTls | None) -> dict[str, object] | None:
    """The transport socket towards cluster name's servers: mutual TLS presenting the edge's
    certificate, trusting only the CA and only a server proving the cluster's SPIFFE identity,
    over HTTP/2 (ALPN h2: grpcio refuses a TLS client that offers none); None without tls."""
    if tls is None:
        return None
    context = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": str(tls.cert)},
                    "private_key": {"filename": str(tls.key)},
                }
            ],
            "validation_context": {
                "trusted_ca": {"filename": str(tls.ca)},
                "match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"exact": tls.identities[name]}}
                ],
            },
        },
    }
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _cluster(name: str, endpoints: Sequence[str], tls: UpstreamTls | None = None) -> str:
    """Render one upstream cluster with its endpoints (over mutual TLS when tls is given)."""
    lines = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        lines.append(
            "              - endpoint:\n"
            "                  address:\n"
            f"                    socket_address: {{address: {host}, port_value: {int(port)}}}\n"
        )
    template = Template((ENVOY_DIR / "cluster.yaml.tmpl").read_text())
    return template.substitute(
        NAME=name,
        HEALTH_SERVICE=HEALTH_SERVICES[name],
        ENDPOINTS="".join(lines),
        TRANSPORT_SOCKET=_transport_socket(name, tls),
    )
