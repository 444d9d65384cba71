"""The google.api.http rules of an RPC, read the way Envoy's gRPC-JSON transcoder reads them.

A rule is the HttpRule option of a method, whichever descriptor it came from (a generated module's
MethodDescriptor or a compiled MethodDescriptorProto). Used by the edge configuration
(tools/edge.py) and by both API documents (tools/gen_api_docs.py, tools/gen_openapi.py), so that
they agree on which request fields a REST call carries where.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

# A path template variable: "{image_id}" or "{name=shelves/*}"; group 1 is the field path.
_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")


class Binding(NamedTuple):
    """One HTTP mapping of an RPC: the rule itself or one of its additional bindings."""

    verb: str
    """GET, POST, PUT, PATCH, DELETE or a custom verb."""
    path: str
    """The path template as written in the proto."""
    body: str
    """"" (no body), "*" (the whole request) or the request field the body carries."""
    response_body: str
    """"" (the whole response) or the response field the body carries."""


def bindings(rule: Any) -> list[Binding]:
    """Return an HttpRule and its additional bindings, in order; empty when no pattern is set."""
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        return []
    if pattern == "custom":
        verb, path = str(rule.custom.kind), str(rule.custom.path)
    else:
        verb, path = pattern.upper(), str(getattr(rule, pattern))
    found = [Binding(verb, path, str(rule.body), str(rule.response_body))]
    for extra in rule.additional_bindings:
        found.extend(bindings(extra))
    return found


def path_variables(template: str) -> list[tuple[str, str]]:
    """Return (field path, segment pattern) for each variable of a path template, in order; the
    pattern is "" for a plain "{field}"."""
    return [(name, pattern or "") for name, pattern in _VARIABLE.findall(template)]


def openapi_path(template: str) -> str:
    """Return a path template with every "{field=pattern}" variable written as "{field}"."""
    return _VARIABLE.sub(lambda match: "{" + match.group(1) + "}", template)


def bound_fields(rule: Any) -> set[str] | None:
    """Return the top-level request fields (proto names) that the path or the body of any of a
    rule's bindings sets, or None when a body "*" sets them all."""
    names: set[str] = set()
    for binding in bindings(rule):
        if binding.body == "*":
            return None
        names.update(name.split(".")[0] for name, _ in path_variables(binding.path))
        if binding.body:
            names.add(binding.body.split(".")[0])
    return names
