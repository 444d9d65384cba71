"""Swagger UI for the page at /docs is unpacked only from the tarball whose digest is pinned, and
the edge refuses to start without the page's files."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.unit.edge_support import loopback_config
from tools import docs_ui, edge


def tarball(files: dict[str, bytes]) -> bytes:
    """An npm-style .tgz holding files under package/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(f"package/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


PACKAGE = {name: f"contents of {name}".encode() for name in docs_ui.UNPACKED} | {
    "index.html": b"their page, not ours",
}


def test_pinned_integrity_is_an_npm_sha512() -> None:
    assert docs_ui.SWAGGER_UI_INTEGRITY.startswith("sha512-")
    assert docs_ui.integrity(b"") == (
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+"
        "DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
    )
    assert docs_ui.SWAGGER_UI_VERSION.startswith("5.")


def test_unpack_writes_the_page_files_only(tmp_path: Path) -> None:
    data = tarball(PACKAGE)

    docs_ui.unpack(data, docs_ui.integrity(data), tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(docs_ui.UNPACKED)
    for name in docs_ui.UNPACKED:
        assert (tmp_path / name).read_bytes() == PACKAGE[name]


def test_unpack_refuses_a_tarball_with_another_digest(tmp_path: Path) -> None:
    data = tarball(PACKAGE)

    with pytest.raises(docs_ui.PackageError, match="expected sha512-"):
        docs_ui.unpack(data, docs_ui.integrity(data + b"tampered"), tmp_path / "ui")

    assert not (tmp_path / "ui").exists()


def test_unpack_refuses_a_tarball_without_the_bundle(tmp_path: Path) -> None:
    incomplete = {name: data for name, data in PACKAGE.items() if not name.endswith(".js")}
    data = tarball(incomplete)

    with pytest.raises(docs_ui.PackageError, match=r"swagger-ui-bundle\.js is not a file"):
        docs_ui.unpack(data, docs_ui.integrity(data), tmp_path)

    assert not (tmp_path / docs_ui.SWAGGER_UI_BUNDLE.name).exists()


def test_edge_config_needs_the_page_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "swagger-ui-bundle.js"
    monkeypatch.setitem(edge.SERVED_FILES, "SWAGGER_UI_BUNDLE", missing)
    config = loopback_config()

    with pytest.raises(FileNotFoundError, match=r"make docs-ui.*swagger-ui-bundle\.js"):
        edge.render(config)
