"""Uploads that go to disk as they arrive: one-shot spooling and resumable (tus-like) sessions.

Layout under the spool folder (the root given to Spool and UploadSessions):

    incoming/receive-*                 one-shot uploads being received (Spool.receive)
    sessions/<owner>/<id>.json         a resumable session: owner, declared size, times
    sessions/<owner>/<id>.part         its bytes so far; the file's size is the session's offset
    sessions/<owner>/<id>.finished     a finished session's bytes, handed over for processing

<owner> is a digest of the owner id, so an upload id only ever resolves inside its owner's
folder. A session exists while its .json does; the offset is the .part file's size, fsynced after
every append, so after a crash the file system's size is the truth.

A session expires ttl after its last activity (its creation or the end of an append): a client
that keeps sending keeps its session, one that goes away loses it. Busy detection is in-process:
one process serves one spool folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import ParamSpec, TypeVar

from meshkit.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    invalid,
)
from meshkit.reasons import Reason

# Small chunks are gathered up to this size before one worker-thread hop writes them; a chunk of
# this size or more is written on its own, so memory holds at most one batch plus one chunk.
WRITE_BATCH_BYTES = 64 * 1024

_P = ParamSpec("_P")
_T = TypeVar("_T")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (the default clock)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class SpooledFile:
    """A complete upload on disk, handed over for processing; discard() deletes it."""

    path: Path
    size: int

    async def discard(self) -> None:
        """Delete the file; a file already gone is fine."""
        await _to_thread_to_end(_unlink_quietly, self.path)

    async def __aenter__(self) -> SpooledFile:
        """Use the file within `async with`; it is deleted on the way out."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Delete the file, whatever happened inside the block."""
        await self.discard()


class Spool:
    """One-shot uploads written to disk as their chunks arrive, never held in memory."""

    def __init__(self, root: Path) -> None:
        self._folder = root / "incoming"

    async def receive(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> SpooledFile:
        """Write chunks to a new file in the spool folder and return it; InvalidArgument
        IMAGE_TOO_LARGE on `body` the moment the total would pass max_bytes. On any failure or
        cancellation the file is deleted and the error propagates."""
        fd, path = await _to_thread_to_end(_new_incoming_file, self._folder)
        writer = _ChunkWriter(fd)
        try:
            async for chunk in chunks:
                if writer.size + len(chunk) > max_bytes:
                    raise too_large(max_bytes)
                await writer.add(chunk)
            await writer.flush()
        except BaseException:
            await _to_thread_to_end(_close_and_unlink, fd, path)
            raise
        await _to_thread_to_end(os.close, fd)
        return SpooledFile(path=path, size=writer.size)

    async def sweep(self, older_than_seconds: float) -> int:
        """Delete one-shot upload files older than older_than_seconds (left by a process that
        stopped mid-upload); return how many."""
        cutoff = time.time() - older_than_seconds
        return await _to_thread_to_end(_remove_old_files, self._folder, cutoff)


@dataclass(frozen=True)
class UploadSession:
    """A resumable upload: its declared size, the bytes it holds (offset) and its times."""

    id: str
    owner_id: str
    size_bytes: int
    offset: int
    create_time: datetime
    expire_time: datetime

    @property
    def complete(self) -> bool:
        """Whether every declared byte has arrived."""
        return self.offset == self.size_bytes


@dataclass(frozen=True)
class _Record:
    """What <id>.json holds: everything about a session but its offset."""

    owner_id: str
    size_bytes: int
    create_time: datetime
    expire_time: datetime

    def to_json(self) -> bytes:
        """Serialise for the .json file."""
        return json.dumps(
            {
                "owner_id": self.owner_id,
                "size_bytes": self.size_bytes,
                "create_time": self.create_time.isoformat(),
                "expire_time": self.expire_time.isoformat(),
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> _Record:
        """Parse a .json file; ValueError when it is not a record."""
        try:
            raw = json.loads(data)
            record = cls(
                owner_id=str(raw["owner_id"]),
                size_bytes=int(raw["size_bytes"]),
                create_time=datetime.fromisoformat(raw["create_time"]),
                expire_time=datetime.fromisoformat(raw["expire_time"]),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not an upload session record: {error}") from None
        if record.expire_time.tzinfo is None or record.create_time.tzinfo is None:
            raise ValueError("not an upload session record: naive times")
        return record


class UploadSessions:
    """Resumable uploads: create with a declared size, append at an offset, ask the offset,
    finish (hand the file over) or cancel; sessions never finished expire."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        ttl_seconds: float,
        max_open_per_owner: int,
        clock: Clock = utc_now,
    ) -> None:
        self._folder = root / "sessions"
        self._max_bytes = max_bytes
        self._ttl = timedelta(seconds=ttl_seconds)
        self._max_open = max_open_per_owner
        self._clock = clock
        # (owner folder, upload id) of sessions an operation is working on right now.
        self._busy: set[tuple[Path, str]] = set()
        # Counting an owner's sessions and adding one must not interleave with another create.
        self._creating = asyncio.Lock()

    async def create(self, owner_id: str, size_bytes: int) -> UploadSession:
        """Open a session for size_bytes (1..max_bytes) bytes; ResourceExhausted
        UPLOAD_SESSIONS_EXHAUSTED when the owner has max_open_per_owner open sessions already."""
        if size_bytes < 1:
            raise invalid([FieldViolation("size_bytes", "must be at least 1")])
        if size_bytes > self._max_bytes:
            description = f"must be at most {self._max_bytes} bytes"
            raise InvalidArgument(
                message=f"invalid upload: size_bytes {description}",
                reason=Reason.IMAGE_TOO_LARGE,
                violations=[FieldViolation("size_bytes", description)],
            )
        folder = self._owner_folder(owner_id)
        async with self._creating:
            now = self._clock()
            records = await _to_thread_to_end(_owner_records, folder)
            open_sessions = [r for r in records if r.owner_id == owner_id and r.expire_time > now]
            if len(open_sessions) >= self._max_open:
                soonest = min(r.expire_time for r in open_sessions)
                raise ResourceExhausted(
                    message=(
                        f"too many open uploads: at most {self._max_open}; finish or cancel one"
                    ),
                    reason=Reason.UPLOAD_SESSIONS_EXHAUSTED,
                    retry_after_seconds=max(1, math.ceil((soonest - now).total_seconds())),
                )
            upload_id = str(uuid.uuid4())
            record = _Record(
                owner_id=owner_id,
                size_bytes=size_bytes,
                create_time=now,
                expire_time=now + self._ttl,
            )
            await _to_thread_to_end(_create_files, folder, upload_id, record)
        return _session(upload_id, record, offset=0)

    async def get(self, owner_id: str, upload_id: str) -> UploadSession:
        """Return one of the owner's open sessions; NotFound UPLOAD_NOT_FOUND for unknown,
        malformed, expired or another owner's ids alike."""
        folder, key = self._locate(owner_id, upload_id)
        return await self._load_open(folder, key, owner_id)

    async def append(
        self, owner_id: str, upload_id: str, offset: int, chunks: AsyncIterator[bytes]
    ) -> UploadSession:
        """Write chunks at offset, which must be the session's current offset, and return the
        session after them.

        FailedPrecondition UPLOAD_OFFSET_MISMATCH (naming the current offset) for another
        offset; Aborted UPLOAD_BUSY while another operation works on the session; InvalidArgument on
        `body` for a chunk that would pass size_bytes (the chunks before it stay). When the
        chunk stream fails or the call is cancelled, every chunk received so far stays, durably.
        """
        folder, key = self._locate(owner_id, upload_id)
        with self._claim(folder, key):
            session = await self._load_open(folder, key, owner_id)
            if offset != session.offset:
                raise FailedPrecondition(
                    message=(
                        f"offset {offset} is not the upload's current offset {session.offset}: "
                        f"resume from {session.offset}"
                    ),
                    reason=Reason.UPLOAD_OFFSET_MISMATCH,
                    metadata={"offset": str(session.offset)},
                )
            fd = await _to_thread_to_end(_open_for_append, _part(folder, key))
            writer = _ChunkWriter(fd)
            size = session.offset
            try:
                async for chunk in chunks:
                    if session.offset + writer.size + len(chunk) > session.size_bytes:
                        raise _beyond_declared(session.size_bytes)
                    await writer.add(chunk)
            finally:
                # Whatever ended the stream, the bytes received so far are what a client
                # resumes from: they must be on disk before anyone is told the offset.
                try:
                    size = await writer.sync()
                finally:
                    await _to_thread_to_end(os.close, fd)
                record = _Record(
                    owner_id=session.owner_id,
                    size_bytes=session.size_bytes,
                    create_time=session.create_time,
                    expire_time=self._clock() + self._ttl,
                )
                await _to_thread_to_end(_save_record, folder, key, record)
            return _session(key, record, offset=size)

    async def finish(self, owner_id: str, upload_id: str) -> SpooledFile:
        """Hand over a complete session's file (the session ends; discarding the file deletes
        the bytes); FailedPrecondition UPLOAD_INCOMPLETE until offset == size_bytes."""
        folder, key = self._locate(owner_id, upload_id)
        with self._claim(folder, key):
            session = await self._load_open(folder, key, owner_id)
            if not session.complete:
                raise FailedPrecondition(
                    message=(
                        f"upload incomplete: it holds {session.offset} of its "
                        f"{session.size_bytes} bytes"
                    ),
                    reason=Reason.UPLOAD_INCOMPLETE,
                    metadata={"offset": str(session.offset)},
                )
            path = await _to_thread_to_end(_hand_over, folder, key, self._clock())
        return SpooledFile(path=path, size=session.size_bytes)

    async def cancel(self, owner_id: str, upload_id: str) -> None:
        """End a session and delete its bytes; NotFound like get."""
        folder, key = self._locate(owner_id, upload_id)
        with self._claim(folder, key):
            await self._load_open(folder, key, owner_id)
            await _to_thread_to_end(_delete_session, folder, key)

    async def sweep_expired(self, now: datetime | None = None) -> int:
        """Delete the sessions expired at now (default: the clock) with their bytes, and
        leftovers untouched for a ttl (a crash's orphans, finished files never discarded);
        return how many sessions were deleted. Sessions busy right now are left for later."""
        moment = self._clock() if now is None else now
        candidates = await _to_thread_to_end(_expired_sessions, self._folder, moment)
        removed = 0
        for folder, key in candidates:
            if (folder, key) in self._busy:
                continue
            with self._claim(folder, key):
                # An append may have ended between the scan and the claim, extending it.
                if await _to_thread_to_end(_delete_if_expired, folder, key, moment):
                    removed += 1
        cutoff = (moment - self._ttl).timestamp()
        await _to_thread_to_end(_remove_leftovers, self._folder, cutoff)
        return removed

    def _owner_folder(self, owner_id: str) -> Path:
        """The folder of one owner's sessions (a digest: owner ids never reach a path)."""
        return self._folder / hashlib.sha256(owner_id.encode()).hexdigest()[:32]

    def _locate(self, owner_id: str, upload_id: str) -> tuple[Path, str]:
        """The owner's folder and the canonical form of upload_id; NotFound when it is no UUID."""
        try:
            key = str(uuid.UUID(upload_id))
        except ValueError:
            raise upload_not_found() from None
        return self._owner_folder(owner_id), key

    @contextlib.contextmanager
    def _claim(self, folder: Path, key: str) -> Iterator[None]:
        """Mark a session busy for the block; Aborted UPLOAD_BUSY when it is already.

        Keyed by the caller's owner folder too: another owner's busy id stays a plain NotFound.
        """
        if (folder, key) in self._busy:
            raise Aborted(
                message="another request is working on this upload; retry when it has ended",
                reason=Reason.UPLOAD_BUSY,
            )
        self._busy.add((folder, key))
        try:
            yield
        finally:
            self._busy.discard((folder, key))

    async def _load_open(self, folder: Path, key: str, owner_id: str) -> UploadSession:
        """The session if it is the owner's and open; NotFound otherwise."""
        loaded = await _to_thread_to_end(_load, folder, key)
        if loaded is None:
            raise upload_not_found()
        record, offset = loaded
        if record.owner_id != owner_id or record.expire_time <= self._clock():
            raise upload_not_found()
        return _session(key, record, offset=offset)


def too_large(max_bytes: int) -> InvalidArgument:
    """The error for an upload passing max_bytes (field `body`, reason IMAGE_TOO_LARGE)."""
    description = f"must be at most {max_bytes} bytes"
    return InvalidArgument(
        message=f"invalid image: body {description}",
        reason=Reason.IMAGE_TOO_LARGE,
        violations=[FieldViolation("body", description)],
    )


def upload_not_found() -> NotFound:
    """The one answer for unknown, malformed, expired and other owners' upload ids."""
    return NotFound(message="upload not found", reason=Reason.UPLOAD_NOT_FOUND)


def _beyond_declared(size_bytes: int) -> InvalidArgument:
    """The error for a chunk that would take a session past its declared size."""
    description = f"has more bytes than the declared size_bytes {size_bytes}"
    return InvalidArgument(
        message=f"invalid upload: body {description}",
        violations=[FieldViolation("body", description)],
    )


def _session(upload_id: str, record: _Record, *, offset: int) -> UploadSession:
    """Combine a record and an offset."""
    return UploadSession(
        id=upload_id,
        owner_id=record.owner_id,
        size_bytes=record.size_bytes,
        offset=offset,
        create_time=record.create_time,
        expire_time=record.expire_time,
    )


class _ChunkWriter:
    """Writes chunks to an open file descriptor from worker threads, small ones in batches."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.written = 0

    @property
    def size(self) -> int:
        """Bytes accepted so far, written or still pending."""
        return self.written + self._pending_bytes

    async def add(self, chunk: bytes) -> None:
        """Accept a chunk; it is written once the pending ones reach a batch."""
        if not chunk:
            return
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= WRITE_BATCH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        """Write the pending chunks; on a write error the file keeps only whole batches."""
        if not self._pending:
            return
        batch, size = self._pending, self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        await _to_thread_to_end(_write_batch, self._fd, batch)
        self.written += size

    async def sync(self) -> int:
        """Write the pending chunks, make the file durable and return its size."""
        await self.flush()
        return await _to_thread_to_end(_fsync_size, self._fd)


async def _to_thread_to_end(func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run func in a worker thread and wait for its end even when cancelled meanwhile; the
    cancellation is raised afterwards.

    A thread cannot be stopped: returning early would let the caller close, delete or report
    the size of a file that the thread is still writing.
    """
    task = asyncio.ensure_future(asyncio.to_thread(func, *args, **kwargs))
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller sees
        raise asyncio.CancelledError
    return task.result()


# Blocking helpers below run in worker threads.


def _new_incoming_file(folder: Path) -> tuple[int, Path]:
    """Create a private, empty file in folder; return its descriptor and path."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix="receive-")
    return fd, Path(name)


def _write_batch(fd: int, batch: list[bytes]) -> None:
    """Write every chunk of batch; on failure cut the file back to where the batch began."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        for chunk in batch:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def _fsync_size(fd: int) -> int:
    """Make a file's data durable; return its size."""
    os.fsync(fd)
    return os.fstat(fd).st_size


def _close_and_unlink(fd: int, path: Path) -> None:
    """Close a descriptor and delete its file."""
    os.close(fd)
    _unlink_quietly(path)


def _unlink_quietly(path: Path) -> None:
    """Delete a file unless it is gone already."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _part(folder: Path, key: str) -> Path:
    """Where a session's bytes are."""
    return folder / f"{key}.part"


def _record_path(folder: Path, key: str) -> Path:
    """Where a session's record is."""
    return folder / f"{key}.json"


def _finished(folder: Path, key: str) -> Path:
    """Where a finished session's bytes wait for processing."""
    return folder / f"{key}.finished"


def _uuid_stem(name: str, suffix: str) -> str | None:
    """The upload id of a file named <id><suffix>, or None for any other name."""
    if not name.endswith(suffix):
        return None
    stem = name.removesuffix(suffix)
    try:
        return stem if str(uuid.UUID(stem)) == stem else None
    except ValueError:
        return None


def _owner_records(folder: Path) -> list[_Record]:
    """The readable records in one owner's folder."""
    records: list[_Record] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if _uuid_stem(entry.name, ".json") is None:
                continue
            with contextlib.suppress(FileNotFoundError, ValueError):
                records.append(_Record.from_json(Path(entry.path).read_bytes()))
    return records


def _create_files(folder: Path, key: str, record: _Record) -> None:
    """Create an empty .part, then publish the record: the session exists from then on."""
    for _attempt in range(3):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(_part(folder, key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            continue  # the sweep removed the empty folder in between
        os.close(fd)
        break
    else:
        raise FileNotFoundError(f"cannot create upload session folder {folder}")
    _save_record(folder, key, record)


def _save_record(folder: Path, key: str, record: _Record) -> None:
    """Write a record atomically and durably (a reader sees the old or the new one)."""
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".record-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(record.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, _record_path(folder, key))
    except BaseException:
        _unlink_quietly(Path(temporary))
        raise
    _sync_folder(folder)


def _load(folder: Path, key: str) -> tuple[_Record, int] | None:
    """A session's record and offset, or None when it has no readable record or no bytes."""
    record = _load_record(folder, key)
    if record is None:
        return None
    try:
        return record, _part(folder, key).stat().st_size
    except FileNotFoundError:
        return None


def _open_for_append(path: Path) -> int:
    """Open a session's bytes for appending."""
    return os.open(path, os.O_WRONLY | os.O_APPEND)


def _hand_over(folder: Path, key: str, now: datetime) -> Path:
    """Move a session's bytes out of the session, then end it; return where they are now."""
    finished = _finished(folder, key)
    # Renamed before the record goes, so a crash in between never leaves bytes without a name
    # the sweep knows; stamped now, the file gets a whole ttl of processing before the sweep
    # takes it for a leftover.
    os.replace(_part(folder, key), finished)
    os.utime(finished, (now.timestamp(), now.timestamp()))
    _unlink_quietly(_record_path(folder, key))
    _sync_folder(folder)
    return finished


def _delete_session(folder: Path, key: str) -> None:
    """Delete a session's record, then its bytes."""
    _unlink_quietly(_record_path(folder, key))
    _unlink_quietly(_part(folder, key))


def _expired_sessions(root: Path, now: datetime) -> list[tuple[Path, str]]:
    """(owner folder, id) of every session whose record says it expired at now."""
    expired: list[tuple[Path, str]] = []
    for folder in _owner_folders(root):
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(folder):
                key = _uuid_stem(entry.name, ".json")
                if key is None:
                    continue
                record = _load_record(folder, key)
                if record is not None and record.expire_time <= now:
                    expired.append((folder, key))
    return expired


def _load_record(folder: Path, key: str) -> _Record | None:
    """A session's record, or None when it is missing or unreadable."""
    try:
        return _Record.from_json(_record_path(folder, key).read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _delete_if_expired(folder: Path, key: str, now: datetime) -> bool:
    """Delete a session that is still expired at now; tell whether it was."""
    record = _load_record(folder, key)
    if record is None or record.expire_time > now:
        return False
    _delete_session(folder, key)
    return True


def _remove_leftovers(root: Path, cutoff: float) -> None:
    """Delete files of no open session last modified before cutoff, and empty owner folders."""
    for folder in _owner_folders(root):
        with contextlib.suppress(FileNotFoundError):
            entries = list(os.scandir(folder))
            live = {
                key
                for entry in entries
                if (key := _uuid_stem(entry.name, ".json")) is not None
                and _load_record(folder, key) is not None
            }
            for entry in entries:
                if (
                    _uuid_stem(entry.name, ".json") in live
                    or _uuid_stem(entry.name, ".part") in live
                ):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when nothing is left


def _remove_old_files(folder: Path, cutoff: float) -> int:
    """Delete the files in folder last modified before cutoff; return how many."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _owner_folders(root: Path) -> list[Path]:
    """Every owner folder under the sessions folder."""
    try:
        return [Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries so creations and renames survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
