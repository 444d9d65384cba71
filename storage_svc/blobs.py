"""Blob storage for image bytes, content-addressed by hex SHA-256.

Every backend names a blob by its key (64 lowercase hex digits) under two fan-out levels,
ab/cd/<key>, where ab and cd are the key's first two byte pairs: the levels keep folders small.
The local store keeps each blob at <root>/ab/cd/<key>; the S3 store (s3_blobs.py) uses the same
names under an object prefix. Writes are all-or-nothing, so a reader never sees a partial blob.

set_aside, put_back and discard serve the blob collector (collector.py explains why that order is
safe against an upload of the same bytes); keys_older_than serves a scan for blobs no record names.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY = re.compile(r"[0-9a-f]{64}")
_FAN_OUT = re.compile(r"[0-9a-f]{2}")
_COPY_BUFFER_BYTES = 1024 * 1024

_Writer = Callable[[BinaryIO], None]
"""Fills a freshly created temporary file with a blob's bytes."""


class BlobMissing(FileNotFoundError):
    """No blob is stored under the key."""

    # A FileNotFoundError, so callers written against the first local store keep working.


class BlobStore(Protocol):
    """Where image bytes live: a local folder or an S3-compatible bucket."""

    async def put(self, key: str, data: bytes) -> None:
        """Store data under key (its hex SHA-256); a blob already stored under key is kept."""
        ...

    async def put_file(self, key: str, path: Path) -> None:
        """Store the bytes of the file at path under key, streamed (memory stays flat)."""
        ...

    async def exists(self, key: str) -> bool:
        """Tell whether a blob is stored under key (one set aside is not)."""
        ...

    async def size(self, key: str) -> int:
        """Return the blob's length in bytes; BlobMissing when none is stored under key."""
        ...

    def chunks(
        self, key: str, chunk_size: int, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Yield bytes [start, end) of the blob (end None or beyond the blob: to its end) in
        chunks of at most chunk_size bytes; BlobMissing (at the latest on the first iteration)
        when none is stored under key."""
        ...

    async def set_aside(self, key: str) -> None:
        """Move the blob out of reach (readers see it missing); idempotent; missing: no-op."""
        ...

    async def put_back(self, key: str) -> None:
        """Undo set_aside; a blob stored again under key meanwhile is kept (same bytes)."""
        ...

    async def discard(self, key: str) -> None:
        """Delete the set-aside copy of the blob; nothing set aside: no-op."""
        ...

    def keys_older_than(self, seconds: float) -> AsyncIterator[str]:
        """Yield, a few at a time, the key of every stored (not set-aside) blob written more than
        seconds ago."""
        ...

    async def open(self) -> None:
        """Get ready for the first call (clients, connection pools); opening twice is harmless."""
        ...

    async def close(self) -> None:
        """Release clients and sessions."""
        ...


def check_key(key: str) -> str:
    """Return key if it is a hex SHA-256 (64 lowercase hex digits); ValueError otherwise."""
    # Keys end up in file paths and object names: only the exact digest shape may pass.
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"not a hex sha256 blob key: {key!r}")
    return key


def is_key(name: str) -> bool:
    """Tell whether name has the shape of a blob key."""
    return _KEY.fullmatch(name) is not None


def fan_out_name(key: str) -> str:
    """Return the blob's name below a store's root: ab/cd/<key>."""
    check_key(key)
    return f"{key[:2]}/{key[2:4]}/{key}"


def check_range(chunk_size: int, start: int, end: int | None) -> None:
    """Refuse a chunk size below 1, a negative start, or an end before start (ValueError)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    if start < 0:
        raise ValueError(f"start must not be negative, not {start}")
    if end is not None and end < start:
        raise ValueError(f"end ({end}) must not come before start ({start})")


def check_age(seconds: float) -> None:
    """Refuse an age that is negative or not a number (ValueError)."""
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"seconds must be a non-negative number, not {seconds}")


class LocalBlobStore:
    """BlobStore on a local folder; all disk work runs in worker threads."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def path_for(self, key: str) -> Path:
        """Return where the blob with this key lives; ValueError for anything but a hex SHA-256."""
        return self._root / fan_out_name(key)

    async def put(self, key: str, data: bytes) -> None:
        """Store data under key atomically; an existing blob of that key is kept."""
        await asyncio.to_thread(_write_once, self.path_for(key), len(data), _write_bytes(data))

    async def put_file(self, key: str, path: Path) -> None:
        """Copy the file at path under key atomically, a buffer at a time; an existing blob of
        that key is kept."""
        target = self.path_for(key)
        await asyncio.to_thread(_copy_once, target, path)

    async def exists(self, key: str) -> bool:
        """Tell whether a blob is stored under key."""
        return await asyncio.to_thread(self.path_for(key).is_file)

    async def size(self, key: str) -> int:
        """Return the blob's length in bytes; BlobMissing when none is stored under key."""
        path = self.path_for(key)
        try:
            stat = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            raise BlobMissing(key) from None
        return stat.st_size

    def chunks(
        self, key: str, chunk_size: int, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Yield bytes [start, end) of the blob in chunks of at most chunk_size bytes; BlobMissing
        on the first iteration when none is stored under key."""
        # Checked here, not in the generator, so that a bad argument fails at the call.
        path = self.path_for(key)
        check_range(chunk_size, start, end)
        return self._chunks(key, path, chunk_size, start, end)

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
        """Delete a blob that was set aside; nothing set aside: no-op."""
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, _aside(self.path_for(key)))

    def keys_older_than(self, seconds: float) -> AsyncIterator[str]:
        """Yield the key of every stored (not set-aside) blob whose file was written more than
        seconds ago, one leaf folder at a time."""
        check_age(seconds)
        return self._keys_written_before(time.time() - seconds)

    async def open(self) -> None:
        """Nothing to prepare: folders are made as blobs arrive."""

    async def close(self) -> None:
        """Nothing to release: every file is closed after use."""

    async def _chunks(
        self, key: str, path: Path, chunk_size: int, start: int, end: int | None
    ) -> AsyncIterator[bytes]:
        """The generator behind chunks."""
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise BlobMissing(key) from None
        try:
            if start:
                await asyncio.to_thread(handle.seek, start)
            remaining = math.inf if end is None else end - start
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, int(min(chunk_size, remaining)))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def _keys_written_before(self, cutoff: float) -> AsyncIterator[str]:
        """The generator behind keys_older_than: at most one leaf folder's keys in memory."""
        for first in await asyncio.to_thread(_fan_out_folders, self._root):
            for second in await asyncio.to_thread(_fan_out_folders, first):
                for key in await asyncio.to_thread(_keys_in_before, second, cutoff):
                    yield key


def _write_bytes(data: bytes) -> _Writer:
    """A writer that puts data into an open file."""

    def write(handle: BinaryIO) -> None:
        handle.write(data)

    return write


def _copy_once(target: Path, source: Path) -> None:
    """Copy source to target atomically, unless a complete blob is there already."""
    with source.open("rb") as reader:
        length = os.fstat(reader.fileno()).st_size

        def copy(handle: BinaryIO) -> None:
            shutil.copyfileobj(reader, handle, _COPY_BUFFER_BYTES)

        _write_once(target, length, copy)


def _write_once(path: Path, length: int, write: _Writer) -> None:
    """Write a blob to path via a temporary sibling and a rename, unless the blob exists."""
    # Same key means same bytes: an existing complete blob needs no second write.
    if path.is_file() and path.stat().st_size == length:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file sits in the destination folder so os.replace never crosses filesystems.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
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


def _fan_out_folders(folder: Path) -> list[Path]:
    """The fan-out folders (two hex digits) directly in folder; none when it does not exist."""
    return [Path(entry.path) for entry in _entries(folder) if _fan_out_entry(entry)]


def _fan_out_entry(entry: os.DirEntry[str]) -> bool:
    """Tell whether entry is a fan-out folder."""
    return _FAN_OUT.fullmatch(entry.name) is not None and entry.is_dir(follow_symlinks=False)


def _keys_in_before(folder: Path, cutoff: float) -> list[str]:
    """The keys of the blobs in a leaf folder whose files were last written at or before cutoff."""
    keys: list[str] = []
    # Temporary (.incoming-) and set-aside (.collecting-) files never have a key's shape.
    expected = f"{folder.parent.name}{folder.name}"
    for entry in _entries(folder):
        if not is_key(entry.name) or not entry.name.startswith(expected):
            continue
        with contextlib.suppress(FileNotFoundError):  # set aside or discarded while listed
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime <= cutoff:
                keys.append(entry.name)
    return keys


def _entries(folder: Path) -> Iterator[os.DirEntry[str]]:
    """The entries of folder, read in one pass; none when it does not exist."""
    try:
        with os.scandir(folder) as listing:
            yield from list(listing)
    except FileNotFoundError:
        return
