"""Fetch Swagger UI, the viewer of the edge's API reference page at /docs, from npm.

Run as `python -m tools.docs_ui` (`make docs-ui`, which `make run`, `make dev` and `make test` run
when the files are missing): packs the pinned version of the npm package swagger-ui-dist, refuses
the tarball unless its sha512 is the pinned one, and unpacks the files the page uses into
.build/docs-ui/ (git-ignored). The edge serves them from there; nothing is fetched at run time.

To move to another version, set SWAGGER_UI_VERSION and SWAGGER_UI_INTEGRITY from
`npm view swagger-ui-dist@<version> version dist.integrity`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWAGGER_UI_VERSION = "5.35.0"
SWAGGER_UI_INTEGRITY = (
    "sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/"
    "EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ=="
)
DOCS_UI = ROOT / ".build" / "docs-ui"
SWAGGER_UI_BUNDLE = DOCS_UI / "swagger-ui-bundle.js"
SWAGGER_UI_CSS = DOCS_UI / "swagger-ui.css"
# What is unpacked: the two files the page loads and the package's licence notices. The bundle
# comes last, so that it exists only once everything else does (make waits for it).
UNPACKED = ("LICENSE", "NOTICE", SWAGGER_UI_CSS.name, SWAGGER_UI_BUNDLE.name)
_VERSION_FILE = DOCS_UI / "VERSION"


class PackageError(Exception):
    """A tarball that is not the pinned one, or lacks a file the page needs."""


def integrity(data: bytes) -> str:
    """Return the npm (Subresource Integrity) sha512 string of data."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def fetched() -> bool:
    """Tell whether the pinned version is already unpacked in DOCS_UI."""
    if not _VERSION_FILE.exists():
        return False
    current = _VERSION_FILE.read_text(encoding="utf-8").strip()
    return current == SWAGGER_UI_VERSION and all((DOCS_UI / name).exists() for name in UNPACKED)


def unpack(tarball: bytes, expected: str, target: Path) -> None:
    """Check a swagger-ui-dist tarball against the expected integrity, then write the UNPACKED
    files into target; PackageError (and nothing written) on a mismatch."""
    actual = integrity(tarball)
    if actual != expected:
        raise PackageError(f"swagger-ui-dist tarball is {actual}, expected {expected}")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as raw:
        raw.write(tarball)
        raw.seek(0)
        with tarfile.open(fileobj=raw, mode="r:gz") as archive:
            for name in UNPACKED:
                # Members are read by name and written under our own names: nothing in the
                # archive chooses where a file lands.
                try:
                    member = archive.extractfile(f"package/{name}")
                except KeyError:
                    member = None
                if member is None:
                    raise PackageError(f"package/{name} is not a file in the tarball")
                partial = target / f".{name}.partial"
                partial.write_bytes(member.read())
                partial.replace(target / name)


def npm_pack(version: str, folder: Path) -> bytes:
    """Return the tarball of swagger-ui-dist@version, packed by npm into folder."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("npm is needed to fetch Swagger UI: apt-get install npm (or `make docs-ui`)")
    spec = f"swagger-ui-dist@{version}"
    packed = subprocess.run(  # noqa: S603 (fixed arguments, npm from PATH)
        [npm, "pack", spec, "--json", "--pack-destination", str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    [report] = json.loads(packed.stdout)
    return (folder / str(report["filename"])).read_bytes()


def main() -> int:
    """Unpack the pinned Swagger UI into DOCS_UI unless it is already there."""
    if fetched():
        # make compares this file's time with tools/docs_ui.py's: mark the files current.
        SWAGGER_UI_BUNDLE.touch()
        print(f"Swagger UI {SWAGGER_UI_VERSION} is in {DOCS_UI.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="meshgram-docs-ui-") as folder:
        tarball = npm_pack(SWAGGER_UI_VERSION, Path(folder))
    try:
        unpack(tarball, SWAGGER_UI_INTEGRITY, DOCS_UI)
    except PackageError as error:
        print(f"refusing Swagger UI: {error}", file=sys.stderr)
        return 1
    _VERSION_FILE.write_text(SWAGGER_UI_VERSION + "\n", encoding="utf-8")
    print(f"unpacked Swagger UI {SWAGGER_UI_VERSION} into {DOCS_UI.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
