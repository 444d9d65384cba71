"""Generate Python stubs, typing stubs and Envoy's descriptor set from protos/.

Run as `python -m tools.gen_protos` (what `make proto` does). Output is never hand-edited:
- meshgram/**/*_pb2.py, *_pb2_grpc.py, *.pyi   Python stubs and typing stubs
- envoy/api_descriptor.pb                       descriptor set for REST transcoding
- .build/proto-deps/google/{api,rpc}/*.proto    third-party protos for `buf lint`
"""

from __future__ import annotations

import shutil
import sys
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
INTERNAL_PROTOS = ["meshgram/dataaccess/v1/dataaccess.proto"]
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
    """Return a console script installed beside the running interpreter."""
    return Path(sys.executable).parent / name


def _protoc(args: list[str]) -> None:
    """Run protoc in-process and stop with its exit status on failure."""
    includes = [f"-I{PROTO_ROOT}", f"-I{_googleapis_root()}", f"-I{_wellknown_root()}"]
    code = protoc.main(["grpc_tools.protoc", *includes, *args])
    if code != 0:
        sys.exit(f"protoc failed ({code}): {' '.join(args)}")


def _clean_generated() -> None:
    """Remove earlier output so renamed or deleted protos leave nothing behind."""
    gen = OUT_ROOT / "meshgram"
    if gen.exists():
        shutil.rmtree(gen)


def _mark_packages() -> None:
    """Add empty __init__.py files so tools that dislike namespace packages are happy."""
    for folder in (OUT_ROOT / "meshgram").rglob("*"):
        if folder.is_dir():
            (folder / "__init__.py").touch()
    (OUT_ROOT / "meshgram" / "__init__.py").touch()


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
    _clean_generated()
    sources = PUBLIC_PROTOS + INTERNAL_PROTOS
    _protoc(
        [
            f"--python_out={OUT_ROOT}",
            f"--grpc_python_out={OUT_ROOT}",
            f"--plugin=protoc-gen-mypy={_venv_tool('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_venv_tool('protoc-gen-mypy_grpc')}",
            f"--mypy_out={OUT_ROOT}",
            f"--mypy_grpc_out={OUT_ROOT}",
            *sources,
        ]
    )
    _mark_packages()
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
