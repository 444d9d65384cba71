"""docs/openapi.json is generated from the protos by tools/gen_openapi.py, must stay so, and must
describe what the edge's transcoder serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pool
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from meshkit.public_api import PUBLIC_SERVICES
from tools import gen_openapi
from tools.descriptors import compile_descriptors
from tools.gen_protos import ERROR_PROTOS

PROBE = "probe/v1/probe.proto"
PROBE_ROOT = Path(__file__).parent / "protos"
ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The committed docs/openapi.json."""
    loaded: dict[str, Any] = json.loads(gen_openapi.OPENAPI_DOC.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    """The document of tests/unit/protos/probe/v1/probe.proto, which uses every mapping."""
    descriptors = compile_descriptors([PROBE, *ERROR_PROTOS], include=[PROBE_ROOT])
    return gen_openapi.render(descriptors, [PROBE])


def operations(document: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every operation of a document by operationId, with its verb and path."""
    found = {}
    for path, item in document["paths"].items():
        for verb, operation in item.items():
            found[operation["operationId"]] = (verb, path, operation)
    return found


def rest_routes() -> set[tuple[str, str, str]]:
    """(verb, path, operationId) of every google.api.http binding of the public services, read
    from the generated modules rather than through tools/."""
    routes = set()
    for name in PUBLIC_SERVICES:
        service = descriptor_pool.Default().FindServiceByName(name)
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            for n, binding in enumerate([rule, *rule.additional_bindings]):
                verb = binding.WhichOneof("pattern")
                path = re.sub(r"\{([^}=]+)=[^}]*\}", r"{\1}", getattr(binding, verb))
                suffix = f"_{n + 1}" if n else ""
                routes.add((verb, path, f"{service.name}_{method.name}{suffix}"))
    return routes


def test_openapi_document_is_up_to_date() -> None:
    diff = gen_openapi.check()
    assert not diff, (
        f"docs/openapi.json is out of date: run `{gen_openapi.COMMAND}` (or `make docs`) and "
        f"commit the result.\n{diff}"
    )


def test_check_reports_a_stale_document(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text('{"openapi": "3.0.0"}\n', encoding="utf-8")

    diff = gen_openapi.check(stale)

    assert '-{"openapi": "3.0.0"}' in diff
    assert '+  "openapi": "3.1.0",' in diff


def test_document_is_valid_openapi_3_1(document: dict[str, Any], probe: dict[str, Any]) -> None:
    validate(document, cls=OpenAPIV31SpecValidator)
    validate(probe, cls=OpenAPIV31SpecValidator)


def test_every_rest_route_is_an_operation_and_nothing_else(document: dict[str, Any]) -> None:
    listed = {(verb, path, op_id) for op_id, (verb, path, _) in operations(document).items()}

    assert listed == rest_routes()
    assert "dataaccess" not in json.dumps(document).lower()


def test_servers_are_the_serving_edge_and_make_run(document: dict[str, Any]) -> None:
    assert [server["url"] for server in document["servers"]] == ["/", "http://127.0.0.1:8080"]


def test_bearer_token_exactly_where_the_services_check_it(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"][gen_openapi.BEARER]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    needs_token = {
        op_id: "security" in operation for op_id, (_, _, operation) in operations(document).items()
    }
    # AuthService checks a token on the calls of a signed-in user about their own account
    # (VerifyMfa, the second step of a login, comes before there is one).
    own_account = {
        "AuthService_ChangePassword",
        "AuthService_ChangeEmail",
        "AuthService_ListSessions",
        "AuthService_DeleteSession",
        "AuthService_DeleteOtherSessions",
        "AuthService_Reauthenticate",
        "AuthService_GetMfa",
        "AuthService_StartMfaEnrollment",
        "AuthService_ConfirmMfaEnrollment",
        "AuthService_DisableMfa",
        "AuthService_RegenerateRecoveryCodes",
        "AuthService_ListSecurityEvents",
    }
    # A profile page answers signed-out visitors too.
    # So do images of public accounts (and any image through a signed URL).
    open_to_all = {
        "UserService_GetProfile",
        "StorageService_GetImage",
        "StorageService_DownloadImage",
        "StorageService_DownloadImage_2",  # the same RPC under /v1/images/{id}/variants
        "StorageService_DownloadImage_3",  # and at /v1/images/{id}:download
    }
    for op_id, secured in needs_token.items():
        expected = (
            op_id.startswith(("UserService_", "StorageService_")) or op_id in own_account
        ) and op_id not in open_to_all
        assert secured == expected, op_id
        if secured:
            assert "401" in operations(document)[op_id][2]["responses"]
    for public in (
        "AuthService_GetJwks",
        "AuthService_Register",
        "AuthService_Login",
        "AuthService_VerifyMfa",
    ):
        assert not needs_token[public]


def test_operations_carry_the_proto_comments(document: dict[str, Any]) -> None:
    verb, path, register = operations(document)["AuthService_Register"]

    assert (verb, path) == ("post", "/v1/auth:register")
    assert register["summary"] == (
        "Creates an account with its (empty) profile and mails a link that verifies the address."
    )
    assert "ALREADY_EXISTS" in register["description"]
    assert register["tags"] == ["AuthService"]
    assert "409" in register["responses"]
    account = document["components"]["schemas"]["meshgram.auth.v1.Account"]
    assert account["description"] == "Account is the public view of an account."
    assert account["properties"]["id"]["readOnly"] is True
    tags = {tag["name"]: tag["description"] for tag in document["tags"]}
    assert tags["UserService"].startswith("UserService serves the profile page")


def test_every_operation_lists_its_errors_as_google_rpc_status(document: dict[str, Any]) -> None:
    for op_id, (_, _, operation) in operations(document).items():
        responses = operation["responses"]
        assert {"400", "431", "503", "504", "default"} <= set(responses), op_id
        for status, response in responses.items():
            if status == "default":
                assert response == {"$ref": "#/components/responses/Error"}
            elif int(status) >= 400:
                assert response["content"] == ERROR, (op_id, status)
                assert response["description"], (op_id, status)
    update = operations(document)["UserService_UpdateMyProfile"][2]["responses"]
    assert "413" in update  # a JSON body
    assert "413" not in operations(document)["StorageService_UploadImage"][2]["responses"]
    assert "404" in operations(document)["UserService_GetProfile"][2]["responses"]
    download = operations(document)["StorageService_DownloadImage"][2]
    assert "content" not in download["responses"]["304"]
    assert "ETag" in download["responses"]["200"]["headers"]
    assert {"name": "If-None-Match", "in": "header"}.items() <= download["parameters"][-1].items()


def test_an_error_as_the_edge_renders_it_matches_the_status_schema(
    document: dict[str, Any],
) -> None:
    # The shape of README.md's short-password example.
    error = {
        "code": 3,
        "message": "invalid request: password: must be 8 to 1024 characters",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "INVALID_FIELD",
                "domain": "meshgram.dev",
                "metadata": {},
            },
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "password", "description": "must be 8 to 1024"}],
            },
        ],
    }
    schema = {
        "$ref": "#/components/schemas/google.rpc.Status",
        "components": document["components"],
    }
    OAS31Validator(schema).validate(error)
    assert not OAS31Validator(schema).is_valid({**error, "code": "3"})
    assert not OAS31Validator(schema).is_valid({**error, "details": [{"reason": "X"}]})


def test_proto3_json_mapping(probe: dict[str, Any]) -> None:
    schemas = probe["components"]["schemas"]
    shelf = schemas["probe.v1.Shelf"]["properties"]

    assert shelf["big"]["type"] == "string"  # int64
    assert (shelf["small"]["type"], shelf["small"]["minimum"]) == ("integer", 0)  # uint32
    assert shelf["blob"]["contentEncoding"] == "base64"
    assert shelf["flag"] == {"type": "boolean"}
    assert shelf["ratio"]["type"] == "number"
    assert shelf["genre"] == {"$ref": "#/components/schemas/probe.v1.Genre"}
    assert schemas["probe.v1.Genre"]["enum"] == ["GENRE_UNSPECIFIED", "GENRE_POETRY"]
    assert shelf["tags"] == {"type": "array", "items": {"type": "string"}}
    assert shelf["books"] == {
        "type": "object",
        "additionalProperties": {"$ref": "#/components/schemas/probe.v1.Book"},
    }
    assert shelf["labels"]["propertyNames"] == {"pattern": "^-?[0-9]+$"}
    assert (shelf["createTime"]["format"], shelf["createTime"]["readOnly"]) == ("date-time", True)
    assert re.fullmatch(shelf["ttl"]["pattern"], "1.5s")
    assert shelf["mask"]["type"] == "string"
    assert "comma-separated lowerCamelCase" in shelf["mask"]["description"]
    assert shelf["maybe"]["type"] == ["integer", "null"]
    assert shelf["extra"] == {"type": "object"}
    assert shelf["parent"] == {"$ref": "#/components/schemas/probe.v1.Shelf"}
    assert shelf["secret"]["writeOnly"] is True
    assert "note" in shelf  # proto3 optional: no oneof constraint
    assert schemas["probe.v1.Shelf"]["allOf"] == [
        {"not": {"anyOf": [{"required": ["room", "floor"]}]}}
    ]
    assert schemas["probe.v1.Book"]["required"] == ["title"]


def test_parameters_bodies_and_responses(probe: dict[str, Any]) -> None:
    found = operations(probe)
    assert set(found) == {
        "ShelfService_GetShelf",
        "ShelfService_GetShelf_2",
        "ShelfService_PutBook",
        "ShelfService_CreateBook",
        "ShelfService_Upload",
        "ShelfService_ListBooks",
        "ShelfService_CountBooks",
        "OpenService_Ping",
    }

    verb, path, get = found["ShelfService_GetShelf"]
    assert (verb, path) == ("get", "/v1/{name}")
    assert found["ShelfService_GetShelf_2"][:2] == ("get", "/v1/shelves:byName/{name}")
    by_name = {parameter["name"]: parameter for parameter in get["parameters"]}
    assert by_name["name"]["in"] == "path"
    assert by_name["name"]["required"] is True
    assert "Matches `shelves/*`." in by_name["name"]["description"]
    # Message fields are dotted; maps, repeated messages, Struct and recursion stay out.
    assert [name for name, p in by_name.items() if p["in"] == "query"] == [
        "readMask",
        "filter.genre",
        "filter.after",
        "filter.ok",
        "ids",
    ]
    assert "Also accepted as `read_mask`." in by_name["readMask"]["description"]
    assert by_name["ids"]["schema"]["type"] == "array"
    assert {"401", "404"} <= set(get["responses"])

    verb, path, put = found["ShelfService_PutBook"]
    assert (verb, path) == ("put", "/v1/{shelf.name}/book")
    assert [(p["name"], p["in"]) for p in put["parameters"]] == [
        ("shelf.name", "path"),
        ("etag", "query"),
    ]
    body = put["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("probe.v1.Book")

    create = found["ShelfService_CreateBook"][2]
    assert [p["in"] for p in create["parameters"]] == ["path"]  # body "*": no query
    created = create["requestBody"]["content"]["application/json"]["schema"]
    assert set(created["properties"]) == {"title"}  # the path sets bookId

    upload = found["ShelfService_Upload"][2]
    assert upload["requestBody"]["content"] == {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }
    assert "413" not in upload["responses"]

    listed = found["ShelfService_ListBooks"][2]["responses"]["200"]["content"]
    assert listed["application/json"]["schema"]["type"] == "array"  # a stream
    counted = found["ShelfService_CountBooks"][2]["responses"]["200"]["content"]
    assert counted["application/json"]["schema"]["format"] == "int64"  # response_body

    ping = found["OpenService_Ping"][2]
    assert "security" not in ping
    assert "401" not in ping["responses"]


def test_raw_image_bodies(document: dict[str, Any]) -> None:
    found = operations(document)
    upload = found["StorageService_UploadImage"][2]["requestBody"]["content"]
    download = found["StorageService_DownloadImage"][2]["responses"]["200"]["content"]

    binary = {"schema": {"type": "string", "format": "binary"}}
    assert upload == {"application/octet-stream": binary, "image/*": binary}
    assert download == {"image/*": binary}
