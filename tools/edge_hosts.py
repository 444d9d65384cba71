"""Routing by host at the edge: which host of EDGE_DOMAIN serves which services and pages.

Without a domain the edge has one virtual host that serves everything on any Host (local
development). With one, every host gets the same routes (so CORS and each route's settings are
the same everywhere) plus an access rule (Envoy's RBAC filter, after the transcoder, so REST
paths are judged by the gRPC method they call) letting through only what HOSTS gives it; what
it refuses, and every Host that is none of these, gets a JSON 404 with gRPC code NOT_FOUND.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from google.api import annotations_pb2, httpbody_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tools.http_rules import bindings

REFLECTION_PREFIX = f"/{reflection_pb2.DESCRIPTOR.services_by_name['ServerReflection'].full_name}/"
_HTTP_BODY = httpbody_pb2.HttpBody.DESCRIPTOR.full_name


@dataclass(frozen=True)
class HostPlan:
    """What one host serves: the public services of some proto packages, the media downloads,
    and the paths of files Envoy serves itself."""

    packages: tuple[str, ...] = ()
    """Proto packages whose every service is served here (gRPC, gRPC-web and REST)."""
    downloads: bool = False
    """The GET-mapped methods answering google.api.HttpBody (image files), over every protocol."""
    pages: tuple[str, ...] = ()
    """Path prefixes of what is not a gRPC method (pages, media URLs)."""
    reflection: bool = False
    """Server reflection, so grpcurl can list and describe the API at this host."""


# The one table of which host serves what; the first label of each name.
HOSTS: Mapping[str, HostPlan] = {
    "auth": HostPlan(packages=("meshgram.auth.v1",), pages=("/account/",), reflection=True),
    "api": HostPlan(
        packages=("meshgram.user.v1", "meshgram.storage.v1"),
        # The API answers media URLs as paths (/media/...): they work on this host too.
        pages=("/docs", "/media/"),
        reflection=True,
    ),
    "media": HostPlan(downloads=True, pages=("/media/",)),
}
# The bare domain and www. send a browser to the API reference on the api host.
HOME_LABELS = ("", "www")
HOME_TARGET = "api"


@dataclass(frozen=True)
class Served:
    """The paths one host lets through: prefixes and exact paths."""

    prefixes: tuple[str, ...]
    paths: tuple[str, ...]


def served(plan: HostPlan, files: Iterable[object]) -> Served:
    """The path prefixes (services, pages) and exact paths (download methods) plan serves,
    found in the public proto files."""
    prefixes: list[str] = []
    paths: list[str] = []
    for file in files:
        package = file.package  # type: ignore[attr-defined]
        for service in file.services_by_name.values():  # type: ignore[attr-defined]
            if package in plan.packages:
                prefixes.append(f"/{service.full_name}/")
            elif plan.downloads:
                paths += [f"/{service.full_name}/{m.name}" for m in service.methods if _download(m)]
    if plan.reflection:
        prefixes.append(REFLECTION_PREFIX)
    return Served(prefixes=(*prefixes, *plan.pages), paths=tuple(paths))


def _download(method: object) -> bool:
    """A method that answers a file to a GET: media delivery."""
    rules = bindings(method.GetOptions().Extensions[annotations_pb2.http])  # type: ignore[attr-defined]
    returns_file = method.output_type.full_name == _HTTP_BODY  # type: ignore[attr-defined]
    return returns_file and any(rule.verb == "GET" for rule in rules)


def host_domains(name: str) -> list[str]:
    """Envoy domains for one host name: itself and with any port (Envoy lowercases the Host)."""
    return [name, f"{name}:*"]


def _rbac(served: Served | None) -> dict[str, object]:
    """A per-virtual-host RBAC rule allowing only what served lists (nothing when None)."""
    policies: dict[str, object] = {}
    if served is not None:
        rules = [{"url_path": {"path": {"prefix": prefix}}} for prefix in served.prefixes]
        rules += [{"url_path": {"path": {"exact": path}}} for path in served.paths]
        policies["served-here"] = {
            "permissions": [{"or_rules": {"rules": rules}}],
            "principals": [{"any": True}],
        }
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
        "rbac": {"rules": {"action": "ALLOW", "policies": policies}},
    }


def any_host_access(domain: str | None) -> str:
    """The template vhost's access rule: none without a domain (it serves everything), else
    refuse everything (a Host that is not one of the domain's)."""
    if not domain:
        return ""
    return f"                        envoy.filters.http.rbac: {json.dumps(_rbac(None))}\n"


def virtual_hosts(domain: str | None, files: Sequence[object]) -> str:
    """The virtual hosts of domain after the template's one, as YAML lines under
    virtual_hosts: each HOSTS entry with the template's routes, CORS and headers (by YAML alias)
    and its access rule, then the bare domain and www. redirecting to the api host."""
    if not domain:
        return ""
    domain = domain.lower().strip(".")
    text = []
    for label, plan in HOSTS.items():
        rule = json.dumps(_rbac(served(plan, files)))
        text.append(
            f"                    - name: host_{label}\n"
            f"                      domains: {json.dumps(host_domains(f'{label}.{domain}'))}\n"
            "                      typed_per_filter_config:\n"
            "                        envoy.filters.http.cors: *cors_policy\n"
            f"                        envoy.filters.http.rbac: {rule}\n"
            "                      request_headers_to_remove: *untrusted_headers\n"
            "                      request_headers_to_add: *edge_headers\n"
            "                      routes: *routes\n"
        )
    home = [d for label in HOME_LABELS for d in host_domains(f"{label}.{domain}".lstrip("."))]
    # 302: where the reference lives may change; the port of the Host is not kept.
    redirect = f"host_redirect: {HOME_TARGET}.{domain}, response_code: FOUND"
    rule = json.dumps(_rbac(Served(prefixes=("/docs",), paths=("/",))))
    text.append(
        "                    - name: host_home\n"
        f"                      domains: {json.dumps(home)}\n"
        # Redirects only: the transcoder would answer 404 and the cache look for a service.
        "                      typed_per_filter_config:\n"
        "                        envoy.filters.http.grpc_json_transcoder: *disabled\n"
        "                        meshgram.media_cache: *disabled\n"
        f"                        envoy.filters.http.rbac: {rule}\n"
        "                      routes:\n"
        "                        - match: {path: /}\n"
        f"                          redirect: {{{redirect}, path_redirect: /docs}}\n"
        "                        - match: {prefix: /}\n"
        f"                          redirect: {{{redirect}}}\n"
    )
    return "".join(text)


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}$")


def domain_from_env(env: Mapping[str, str]) -> str | None:
    """EDGE_DOMAIN from env, lowercased without a trailing dot; None when unset or empty.
    Raises ValueError for what is not a DNS name (a URL, a port, a wildcard)."""
    raw = env.get("EDGE_DOMAIN", "").strip().lower().rstrip(".")
    if not raw:
        return None
    if not _DOMAIN.match(raw):
        raise ValueError(f"EDGE_DOMAIN must be a DNS name such as meshgram.example, not {raw!r}")
    return raw


def host_urls(domain: str, port: int, scheme: str = "http") -> dict[str, str]:
    """The origin of each host of domain (HOSTS labels), e.g. {"auth": "http://auth.x:8080"}."""
    return {label: f"{scheme}://{label}.{domain}:{port}" for label in HOSTS}
