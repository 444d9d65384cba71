"""Build hook of meshgram-client: generate the public stubs from the repository's protos/.

Generated code is never committed. While building, `build_py` loads the repository's
tools/gen_protos.py by path (it needs only this build's requirements, never the root project or
its dependencies) and writes the stubs and typing stubs of its PUBLIC_PROTOS, so the client
carries exactly what `make proto` generates, minus the internal data_access API. An sdist
carries copies of those protos and of the generator, so it builds on its own.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
GENERATOR = Path("tools") / "gen_protos.py"
PROTOS = Path("protos")
# The generated code checks at import that these are at least as new as the generator's.
PINNED_BY_GENERATOR = ("grpcio", "protobuf")


def _source_root() -> Path:
    """The folder holding protos/ and tools/gen_protos.py: this one in an sdist, else the
    repository this folder belongs to."""
    for candidate in (HERE, HERE.parent.parent):
        if (candidate / GENERATOR).is_file() and (candidate / PROTOS).is_dir():
            return candidate
    raise SystemExit(
        f"meshgram-client: cannot find {PROTOS}/ and {GENERATOR} in {HERE} or in"
        f" {HERE.parent.parent}. The stubs are generated from the meshgram repository's protos:"
        " install from a checkout (pip install ./clients/python) or from an sdist built there."
    )


def _generator() -> ModuleType:
    """tools/gen_protos.py, loaded by path."""
    path = _source_root() / GENERATOR
    spec = importlib.util.spec_from_file_location("_meshgram_gen_protos", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"meshgram-client: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requirement_name(requirement: str) -> str:
    """The distribution name a requirement string starts with, normalised."""
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower()


def _dependencies() -> list[str]:
    """Runtime requirements: grpcio and protobuf as the generator itself requires them."""
    generator_requires = importlib.metadata.requires("grpcio-tools") or []
    pinned = [r for r in generator_requires if _requirement_name(r) in PINNED_BY_GENERATOR]
    return [*pinned, "googleapis-common-protos>=1.70"]


class BuildPyWithStubs(build_py):
    """build_py that also writes the generated `meshgram` package beside `meshgram_client`."""

    def run(self) -> None:
        """Copy the sources, then generate the stubs into the build (the source tree when
        editable, since an editable install imports from there)."""
        super().run()
        out = HERE / "src" if self.editable_mode else Path(self.build_lib)
        generator = _generator()
        generator.generate_stubs(out, generator.PUBLIC_PROTOS)
        (out / "meshgram" / "py.typed").touch()


class SdistWithProtos(sdist):
    """sdist that also carries the public protos and their generator."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        """Lay out the sdist, then add protos/<public>.proto and tools/gen_protos.py."""
        super().make_release_tree(base_dir, files)
        root = _source_root()
        wanted = [GENERATOR, *(PROTOS / name for name in _generator().PUBLIC_PROTOS)]
        for relative in wanted:
            target = Path(base_dir) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / relative, target)


setup(
    install_requires=_dependencies(),
    cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos},
)
