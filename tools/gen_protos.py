"""Generate Python stubs, typing stubs and Envoy's descriptor set from protos/.

Run as `python -m tools.gen_protos` (what `make proto` does). Output is never hand-edited:
- meshgram/**/*_pb2.py, *_pb2_grpc.py, *.pyi   Python stubs and typing stubs
- envoy/api_descriptor.pb                       descriptor set for REST transcoding
- .build/proto-deps/google/{api,rpc}/*.proto    third-party protos for `buf lint`

clients/python's build loads this file by path and calls `generate_stubs` with PUBLIC_PROTOS, so
the meshgram-client distribution carries the same stubs; keep its imports to grpc_tools,
googleapis-common-protos and the standard library, which are all that build has.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT
DESCRIPTOR = ROOT / "envoy" / "api_descriptor.pb"
BUF_DEPS = ROOT / ".build" / "proto-deps"

# Public APIs are transcoded by Envoy; data_access is internal and stays out of the edge.
PUBLIC_PROTOS = [
    "meshgram/auth/v1/auth.proto",
    "meshgram/user/v1/user.proto",
    "meshgram/storage/v1/storage.proto",
]
INTERNAL_PROTOS = [
    "meshgram/dataaccess/v1/dataaccess.proto",
    # Served by auth_svc to the edge only (wire-compatible with Envoy's rate-limit service).
    "meshgram/ratelimit/v1/ratelimit.proto",
]
# Rendered by Envoy when it turns a google.rpc.Status into JSON.
ERROR_PROTOS = ["google/rpc/error_details.proto", "google/rpc/status.proto"]


def _googleapis_root() -> Path:
    """Return the site-packages folder that holds google/api/*.proto."""
    import google.api.annotations_pb2 as annotations

    return Path(annotations.__file__).resolve().parent.parent.parent


def _wellknown_root() -> Path:
    """Return grpc_tools' bundled folder with google/protobuf/*.proto."""
    return Path(str(resources.files("grpc_tools"))) / "_proto"


def _venv_tool(name: str) -> Path:
    """Return a console script installed beside the running interpreter, else found on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    # pip installs a build's requirements outside the interpreter's folder, with their scripts
    # on PATH.
    found = shutil.which(name)
    if found is None:
        sys.exit(f"{name} is neither beside {sys.executable} nor on PATH")
    return Path(found)


def _protoc(args: list[str]) -> None:
    """Run protoc in-process and stop with its exit status on failure."""
    includes = [f"-I{PROTO_ROOT}", f"-I{_googleapis_root()}", f"-I{_wellknown_root()}"]
    code = protoc.main(["grpc_tools.protoc", *includes, *args])
    if code != 0:
        sys.exit(f"protoc failed ({code}): {' '.join(args)}")


def _mark_packages(gen: Path) -> None:
    """Add empty __init__.py files so tools that dislike namespace packages are happy."""
    for folder in gen.rglob("*"):
        if folder.is_dir():
            (folder / "__init__.py").touch()
    (gen / "__init__.py").touch()


def generate_stubs(out_root: Path, sources: Sequence[str]) -> None:
    """Write the stubs and typing stubs of `sources` (paths under protos/) to out_root/meshgram."""
    gen = out_root / "meshgram"
    # Start empty so renamed or deleted protos leave nothing behind.
    if gen.exists():
        shutil.rmtree(gen)
    _protoc(
        [
            f"--python_out={out_root}",
            f"--grpc_python_out={out_root}",
            f"--plugin=protoc-gen-mypy={_venv_tool('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_venv_tool('protoc-gen-mypy_grpc')}",
            f"--mypy_out={out_root}",
            f"--mypy_grpc_out={out_root}",
            *sources,
        ]
    )
    _mark_packages(gen)


def _copy_buf_deps() -> None:
    """Copy the google protos our files import so buf can lint without a registry."""
    if BUF_DEPS.exists():
        shutil.rmtree(BUF_DEPS)
    for pkg in ("api", "rpc"):
        src = _googleapis_root() / "google" / pkg
        dst = BUF_DEPS / "google" / pkg
        dst.mkdir(parents=True)
        for proto in src.glob("*.proto"):
            shutil.copy2(proto, dst / proto.name)


def main() -> None:
    """Generate every artefact derived from protos/."""
    generate_stubs(OUT_ROOT, PUBLIC_PROTOS + INTERNAL_PROTOS)
    DESCRIPTOR.parent.mkdir(parents=True, exist_ok=True)
    _protoc(
        [
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={DESCRIPTOR}",
            *PUBLIC_PROTOS,
            *ERROR_PROTOS,
        ]
    )
    _copy_buf_deps()
    print(f"generated stubs in {OUT_ROOT / 'meshgram'} and {DESCRIPTOR.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
