""".env.example lists exactly the environment variables the code reads, commented out, with the
code's defaults.

The variables come from two places:
- the pydantic-settings classes of the services, found by importing `<package>.settings` and
  taking the most derived BaseSettings subclasses it holds (defined there or imported), so the
  test follows the classes wherever they move; a field's variable is env_prefix + its name, or
  its validation_alias / AliasChoices names (e.g. MESHGRAM_ENV, DATABASE_URL);
- the runner (tools/run.py, tools/mesh.py, tools/edge_hosts.py), scanned for every environment
  read with a literal name: os.environ.get("X"), env.get("X"), env.setdefault("X", ...),
  os.environ["X"], ...
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices, AliasPath
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from meshkit.tracing import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
SERVICE_PACKAGES = ("auth_svc", "user_svc", "storage_svc", "data_access")
RUNNER_FILES = (
    "tools/run.py",
    "tools/mesh.py",
    "tools/edge_tls.py",
    "tools/edge_jwt.py",
    "tools/edge_hosts.py",
)
# Read by the runner for Python itself, not a meshgram setting.
NOT_SETTINGS = frozenset({"PYTHONPATH"})
# The settings only the runner reads; if the scan misses these, the scan is broken.
EDGE_SETTINGS = frozenset({"EDGE_PORT", "EDGE_ADMIN_PORT", "EDGE_CORS_ORIGINS", "EDGE_DOMAIN"})

_LISTED = re.compile(r"^# ?([A-Z][A-Z0-9_]*)=(.*)$")
_UNCOMMENTED = re.compile(r"^\s*(export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=")
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_ENVIRONMENT_NAMES = frozenset({"env", "environ", "environment"})


@dataclass(frozen=True)
class Setting:
    """One field of a settings class and the environment variable that sets it."""

    owner: str
    field: str
    variable: str
    info: FieldInfo


def settings_classes(package: str) -> list[type[BaseSettings]]:
    """The most derived BaseSettings subclasses in `<package>.settings`."""
    module = importlib.import_module(f"{package}.settings")
    found = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, BaseSettings) and value is not BaseSettings
    ]
    return [cls for cls in found if not any(o is not cls and issubclass(o, cls) for o in found)]


def variables_of(settings: type[BaseSettings], name: str, info: FieldInfo) -> list[str]:
    """The environment variable names pydantic-settings reads for one field."""
    alias = info.validation_alias if info.validation_alias is not None else info.alias
    if alias is None:
        names = [f"{settings.model_config.get('env_prefix', '')}{name}"]
    elif isinstance(alias, str):
        names = [alias]
    elif isinstance(alias, AliasChoices):
        names = [c if isinstance(c, str) else str(c.path[0]) for c in alias.choices]
    elif isinstance(alias, AliasPath):
        names = [str(alias.path[0])]
    else:
        raise AssertionError(f"{settings.__name__}.{name}: unexpected alias {alias!r}")
    if not settings.model_config.get("case_sensitive", False):
        names = [n.upper() for n in names]
    return names


def service_settings() -> list[Setting]:
    """Every settings field of every service, once per environment variable."""
    found = []
    for package in SERVICE_PACKAGES:
        classes = settings_classes(package)
        assert classes, f"{package}.settings holds no pydantic-settings class"
        for cls in classes:
            for name, info in cls.model_fields.items():
                found.extend(
                    Setting(cls.__name__, name, variable, info)
                    for variable in variables_of(cls, name, info)
                )
    return found


def runner_variables() -> set[str]:
    """Every environment variable tools/run.py and tools/mesh.py read by a literal name."""
    names: set[str] = set()
    for relative in RUNNER_FILES:
        tree = ast.parse((ROOT / relative).read_text(encoding="utf-8"), relative)
        for node in ast.walk(tree):
            name = _read_name(node)
            if name is not None and _ENV_NAME.fullmatch(name) and name not in NOT_SETTINGS:
                names.add(name)
    return names


def _is_environment(node: ast.expr) -> bool:
    """Tell whether an expression is os.environ or a mapping of environment variables."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in _ENVIRONMENT_NAMES


def _literal(node: ast.expr | None) -> str | None:
    """The value of a string literal, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _read_name(node: ast.AST) -> str | None:
    """The variable an AST node reads from the environment by literal name, else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        method = node.func
        if method.attr in {"get", "setdefault", "pop"} and _is_environment(method.value):
            return _literal(node.args[0])
        if method.attr == "getenv":
            return _literal(node.args[0])
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.ctx, ast.Load)
        and _is_environment(node.value)
    ):
        return _literal(node.slice)
    if (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], ast.In | ast.NotIn)
        and _is_environment(node.comparators[0])
    ):
        return _literal(node.left)
    return None


def listed_variables() -> dict[str, str]:
    """The variables .env.example lists, with the values shown."""
    listed: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        match = _LISTED.match(line)
        if match:
            name, value = match.groups()
            assert name not in listed, f".env.example:{number}: {name} is listed twice"
            listed[name] = value
    return listed


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    # The standard OTEL_* variables of tracing, read by every service and the runner.
    in_code = {s.variable for s in service_settings()} | runner_variables() | set(VARIABLES)
    listed = set(listed_variables())

    missing = sorted(in_code - listed)
    unknown = sorted(listed - in_code)

    assert not missing, f"settings missing from .env.example: {', '.join(missing)}"
    assert not unknown, f".env.example lists variables no code reads: {', '.join(unknown)}"


def test_the_runner_scan_sees_the_edge_settings() -> None:
    assert runner_variables() >= EDGE_SETTINGS


def test_env_example_shows_the_code_defaults() -> None:
    listed = listed_variables()
    wrong = []
    for setting in service_settings():
        info = setting.info
        if info.is_required() or info.default_factory is not None:
            continue
        expected = "" if info.default is None else str(info.default)
        shown = listed.get(setting.variable)
        if shown is not None and shown != expected:
            wrong.append(
                f"{setting.variable}={shown!r} but {setting.owner}.{setting.field} "
                f"defaults to {expected!r}"
            )
    assert not wrong, "\n".join(wrong)


def test_copying_env_example_to_env_changes_nothing() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        assert not _UNCOMMENTED.match(line), f".env.example:{number} is not commented out"
        if _LISTED.match(line):
            above = lines[number - 2] if number > 1 else ""
            described = above.startswith("# ") and not _LISTED.match(above)
            assert described, f".env.example:{number}: add a one-line meaning comment above it"
