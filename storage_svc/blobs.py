"""Blob storage for image bytes, content-addressed by hex SHA-256.

The local store keeps each blob at <root>/ab/cd/<sha256>, where ab and cd are the first two byte
pairs of the key: two fan-out levels keep folders small. Writes go to a temporary file in the
final folder and are renamed into place, so a reader never sees a partial blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"[0-9a-f]{64}")


class BlobStore(Protocol):
    """Where image bytes live; the local folder today, an object store later."""

    async def put(self, key: str, data: bytes) -> None:
        """Store data under key (its hex SHA-256); storing the same key again is harmless."""
        ...

    def chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """Yield the bytes stored under key in chunks of at most chunk_size bytes."""
        ...

    async def exists(self, key: str) -> bool:
        """Tell whether a blob is stored under key."""
        ...


class LocalBlobStore:
    """BlobStore on a local folder; all disk work runs in worker threads."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def path_for(self, key: str) -> Path:
        """Return where the blob with this key lives; refuse anything but a hex SHA-256."""
        # Keys end up in file paths: only the exact digest shape may pass.
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a hex sha256 blob key: {key!r}")
        return self._root / key[:2] / key[2:4] / key

    async def put(self, key: str, data: bytes) -> None:
        """Store data under key atomically; an existing blob of that key is kept."""
        await asyncio.to_thread(_write_once, self.path_for(key), data)

    async def exists(self, key: str) -> bool:
        """Tell whether a blob is stored under key."""
        return await asyncio.to_thread(self.path_for(key).is_file)

    async def set_aside(self, key: str) -> None:
        """Move a blob out of reach (readers see it missing); a blob already set aside, or
        missing, is left as it is."""
        path = self.path_for(key)
        await asyncio.to_thread(_move_if_present, path, _aside(path))

    async def put_back(self, key: str) -> None:
        """Undo set_aside; a blob stored again meanwhile is kept (same key, same bytes)."""
        path = self.path_for(key)
        await asyncio.to_thread(_move_if_present, _aside(path), path)

    async def discard(self, key: str) -> None:
        """Delete a blob that was set aside."""
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, _aside(self.path_for(key)))

    async def chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        """Yield the blob's bytes; FileNotFoundError when the key was never stored."""
        handle = await asyncio.to_thread(self.path_for(key).open, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()


def _write_once(path: Path, data: bytes) -> None:
    """Write data to path via a temporary sibling and a rename, unless the blob exists."""
    # Same key means same bytes: an existing complete blob needs no second write.
    if path.is_file() and path.stat().st_size == len(data):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file sits in the destination folder so os.replace never crosses filesystems.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(path.parent)


def _aside(path: Path) -> Path:
    """Where set_aside puts a blob: beside it, under a name no key can have."""
    return path.with_name(f".collecting-{path.name}")


def _move_if_present(source: Path, target: Path) -> None:
    """Rename source to target atomically; nothing to do when source is gone."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(source, target)


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries so the rename survives a crash before metadata is recorded."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
