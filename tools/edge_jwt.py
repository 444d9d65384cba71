"""Access tokens checked at the edge: the parts of the Envoy configuration (tools/edge.py) that
verify them with Envoy's jwt_authn filter before a call reaches a service.

- Which calls need a token comes from meshkit.public_api, the one list of the calls that do not:
  the anonymous ones are not looked at, those with an optional token are refused only for a
  bad token, and every other method of the public services needs a valid one. REST requests are
  checked by the gRPC path the transcoder gave them.
- The keys are auth_svc's JWKS, which Envoy fetches through an internal listener of its own
  that transcodes GET /.well-known/jwks.json into auth_svc's GetJwks (no port is opened for it),
  and fetches again once they are EDGE_JWKS_REFRESH_SECONDS old: a rotated-in key is published
  for longer than that before it signs, so the edge knows it before its first token. While the
  keys cannot be fetched, calls that need a token get UNAVAILABLE (503), as services answer.
- A refusal is the answer the service would have given, byte for byte: built from the same
  errors (meshkit.access_tokens) as a google.rpc.Status, as grpc-status-details-bin for gRPC and
  gRPC-web clients and as the transcoder's JSON for REST ones.
- A verified token's claims go to the service in CLAIMS_HEADER (its payload, base64url JSON) and
  its subject in ACCOUNT_HEADER; the edge removes any copy a client sent of either. Services
  still verify the token themselves (defence in depth); a verified token stays in their cache.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from meshkit.access_tokens import (
    ACCOUNT_HEADER,
    AUDIENCE,
    CLAIMS_HEADER,
    ISSUER,
    JWKS_REFRESH_SECONDS,
    token_expired,
    token_invalid,
    token_missing,
)
from meshkit.errors import DomainError, Unavailable
from meshkit.grpc_errors import message_for, status_code_for, to_status_proto
from meshkit.public_api import (
    ANONYMOUS_METHODS,
    AUTH_SERVICE,
    OPTIONAL_TOKEN_METHODS,
    PUBLIC_SERVICES,
)
from meshkit.reasons import Reason

FORWARDED_HEADERS = (CLAIMS_HEADER, ACCOUNT_HEADER)

PROVIDER = "auth_svc"
JWKS_LISTENER = "jwks_origin"
JWKS_PATH = "/.well-known/jwks.json"
_HEADER_MUTATION = (
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
)
_JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
_CONNECTION_MANAGER = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
# Where jwt_authn writes why it refused a token (its dynamic metadata), for the replies below.
_FILTER = "envoy.filters.http.jwt_authn"
_FAILURE = "failure"
# jwt_verify_lib's status codes (jwt_authn's failure metadata), for the failures that are not
# "invalid": no token, an expired one, and no keys to check it with.
_MISSING = 1
_EXPIRED = 3
_NO_KEYS = (
    40,  # the JWKS could not be fetched ("Jwks remote fetch is failed")
)
# Tokens each Envoy worker remembers as verified (the services' verifier keeps 10,000 too).
VERIFIED_TOKENS_CACHED = 10_000
# The services' leeway for clock skew (meshkit.access_tokens.AccessTokenVerifier).
_LEEWAY_SECONDS = 5


@dataclass(frozen=True)
class EdgeJwt:
    """Whether the edge verifies access tokens, and how often it refetches the keys."""

    enabled: bool = True
    jwks_refresh_seconds: float = JWKS_REFRESH_SECONDS


def edge_jwt_from_env(env: Mapping[str, str]) -> EdgeJwt:
    """EDGE_JWT (on unless 0/false/no/off) and EDGE_JWKS_REFRESH_SECONDS (default 60)."""
    value = env.get("EDGE_JWT", "1").strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        enabled = True
    elif value in ("0", "false", "no", "off"):
        enabled = False
    else:
        raise ValueError("EDGE_JWT must be 1 (verify access tokens at the edge, the default) or 0")
    raw = env.get("EDGE_JWKS_REFRESH_SECONDS", str(JWKS_REFRESH_SECONDS))
    try:
        refresh = float(raw)
    except ValueError:
        refresh = 0.0
    if not 1 <= refresh <= 3600:
        raise ValueError("EDGE_JWKS_REFRESH_SECONDS must be a number of seconds from 1 to 3600")
    return EdgeJwt(enabled=enabled, jwks_refresh_seconds=refresh)


def _required() -> dict[str, Any]:
    """A valid token of the one provider."""
    return {"provider_name": PROVIDER}


def jwt_rules() -> list[dict[str, Any]]:
    """jwt_authn's rules, first match wins: anonymous calls unchecked, an optional token checked
    when present, every other call of a public service needing a valid token. Only POSTs are
    checked: a gRPC method asked with another verb never reaches a service (its route answers
    UNIMPLEMENTED, as before), and REST requests are POSTs once transcoded."""
    post = [{"name": ":method", "string_match": {"exact": "POST"}}]
    rules: list[dict[str, Any]] = [{"match": {"path": path}} for path in sorted(ANONYMOUS_METHODS)]
    optional = {"requires_any": {"requirements": [_required(), {"allow_missing": {}}]}}
    rules += [
        {"match": {"path": path, "headers": post}, "requires": optional}
        for path in sorted(OPTIONAL_TOKEN_METHODS)
    ]
    rules += [
        {"match": {"prefix": f"/{service}/", "headers": post}, "requires": _required()}
        for service in PUBLIC_SERVICES
    ]
    return rules


def _provider(jwt: EdgeJwt) -> dict[str, Any]:
    """The one token issuer, auth_svc, checked as the services check it."""
    refresh = f"{jwt.jwks_refresh_seconds:g}s"
    return {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "require_expiration": True,
        "clock_skew_seconds": _LEEWAY_SECONDS,
        # Only where the services look: "Authorization: Bearer ..." (no query parameter).
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        "remote_jwks": {
            "http_uri": {
                "uri": f"http://auth.internal{JWKS_PATH}",
                "cluster": JWKS_LISTENER,
                "timeout": "2s",
            },
            # Fetched by the first request that needs the keys and again by the first after
            # they expire: the fetch goes through an internal listener, which only the worker
            # threads have (a fetch in the background, from Envoy's main thread, cannot reach it).
            "cache_duration": refresh,
            "retry_policy": {
                "num_retries": 2,
                "retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"},
            },
        },
        # A token seen before is not verified again until it expires, as in the services'
        # cache (and of the same size): a client sends the same token on every call.
        "jwt_cache_config": {"jwt_cache_size": VERIFIED_TOKENS_CACHED},
        # The services verify the token again: it goes on.
        "forward": True,
        "forward_payload_header": CLAIMS_HEADER,
        "claim_to_headers": [{"header_name": ACCOUNT_HEADER, "claim_name": "sub"}],
        "failed_status_in_metadata": _FAILURE,
    }


def filters(jwt: EdgeJwt) -> str:
    """The edge's HTTP filters for tokens, placed after the transcoder, the buffer and the
    request checks (so the edge's answers to a malformed or oversized request come first, as
    when services checked tokens alone): the removal of clients' copies of the forwarded headers
    (always), then jwt_authn (unless turned off)."""
    strip = {
        "name": "meshgram.forwarded_claims",
        "typed_config": {
            "@type": _HEADER_MUTATION,
            "mutations": {"request_mutations": [{"remove": name} for name in FORWARDED_HEADERS]},
        },
    }
    chain: list[dict[str, Any]] = [strip]
    if jwt.enabled:
        authn = {
            "@type": _JWT_AUTHN,
            "providers": {PROVIDER: _provider(jwt)},
            "rules": jwt_rules(),
        }
        chain.append({"name": _FILTER, "typed_config": authn})
    # JSON is YAML: one filter a line, indented under "http_filters:".
    return "".join(f"                  - {json.dumps(item)}\n" for item in chain)


def _status_details(error: DomainError) -> str:
    """The error's google.rpc.Status as a grpc-status-details-bin value."""
    return base64.b64encode(to_status_proto(error).SerializeToString()).decode().rstrip("=")


def rest_body(error: DomainError) -> str:
    """The error as the transcoder shows a service's error to REST clients."""
    status = json_format.MessageToDict(
        to_status_proto(error), always_print_fields_with_no_presence=True
    )
    return json.dumps(status, separators=(",", ":"))


def unavailable() -> Unavailable:
    """The services' answer while the keys cannot be fetched (the token may well be good)."""
    return Unavailable(
        message="the signing keys cannot be fetched, please retry",
        reason=Reason.DEPENDENCY_UNAVAILABLE,
    )


def _failure(value: dict[str, Any]) -> dict[str, Any]:
    """A local-reply filter on jwt_authn's failure code."""
    return {
        "metadata_filter": {
            "matcher": {
                "filter": _FILTER,
                "path": [{"key": _FAILURE}, {"key": "code"}],
                "value": value,
            },
            # Every other answer of the edge has no such metadata and is none of these.
            "match_if_key_not_found": False,
        }
    }


def refusals() -> list[tuple[dict[str, Any], DomainError, int]]:
    """Each refusal of jwt_authn: the failure it answers, the service's error for it and the
    HTTP status of that error; the last matches any failure left."""
    codes = [{"double_match": {"exact": code}} for code in _NO_KEYS]
    no_keys = codes[0] if len(codes) == 1 else {"or_match": {"value_matchers": codes}}
    return [
        (_failure({"double_match": {"exact": _MISSING}}), token_missing(), 401),
        (_failure({"double_match": {"exact": _EXPIRED}}), token_expired(), 401),
        (_failure(no_keys), unavailable(), 503),
        (_failure({"present_match": True}), token_invalid(), 401),
    ]


def mappers(grpc_client: Sequence[object]) -> str:
    """local_reply_config mappers giving jwt_authn's refusals the service's answer: for gRPC
    clients (grpc_client: the filters that tell them) grpc-message and the status details, for
    REST clients the transcoder's JSON. Empty when the edge does not verify tokens."""
    out: list[dict[str, Any]] = []
    for failure, error, status in refusals():
        out.append(
            {
                "filter": {"and_filter": {"filters": [*grpc_client, failure]}},
                # Envoy derives grpc-status from this status; gRPC-web clients get HTTP 200, as
                # from a service, from envoy/lua/answers.lua.
                "status_code": status,
                "body_format_override": {
                    "text_format_source": {"inline_string": message_for(error)}
                },
                "headers_to_add": [
                    {
                        "header": {
                            "key": "grpc-status",
                            "value": str(status_code_for(error).value[0]),
                        },
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    },
                    {
                        "header": {
                            "key": "grpc-status-details-bin",
                            "value": _status_details(error),
                        },
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    },
                ],
            }
        )
        out.append(
            {
                "filter": failure,
                "status_code": status,
                "body_format_override": {
                    "text_format_source": {"inline_string": rest_body(error)},
                    "content_type": "application/json",
                },
            }
        )
    return "".join(f"                    - {json.dumps(mapper)}\n" for mapper in out)


def listeners(jwt: EdgeJwt) -> str:
    """The internal listener jwt_authn fetches the JWKS from: GET /.well-known/jwks.json,
    transcoded to auth_svc's GetJwks like the edge's own route (the edge's transcoder is reused
    by its YAML anchor)."""
    if not jwt.enabled:
        return ""
    return f"""\
    - name: {JWKS_LISTENER}
      internal_listener: {{}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": {_CONNECTION_MANAGER}
                stat_prefix: {JWKS_LISTENER}
                codec_type: AUTO
                stream_idle_timeout: 10s
                route_config:
                  name: {JWKS_LISTENER}
                  virtual_hosts:
                    - name: jwks
                      domains: ["*"]
                      routes:
                        # Matched after the transcoder rewrote the path to GetJwks's.
                        - match: {{path: "/{AUTH_SERVICE}/GetJwks"}}
                          route: {{cluster: auth_svc, timeout: 5s}}
                http_filters:
                  - *transcoder
                  - *router
"""


def clusters(jwt: EdgeJwt) -> str:
    """The cluster that reaches the JWKS listener inside this Envoy."""
    if not jwt.enabled:
        return ""
    return f"""\
    - name: {JWKS_LISTENER}
      connect_timeout: 1s
      load_assignment:
        cluster_name: {JWKS_LISTENER}
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    envoy_internal_address: {{server_listener_name: {JWKS_LISTENER}}}
"""
