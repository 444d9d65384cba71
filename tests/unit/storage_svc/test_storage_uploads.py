"""Spooled and resumable uploads: bytes go to disk as they arrive, sessions resume and expire."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshkit.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from meshkit.reasons import Reason
from storage_svc import uploads as uploads_module
from storage_svc.uploads import WRITE_BATCH_BYTES, Spool, UploadSessions

MAX_BYTES = 1024 * 1024
TTL = 3600.0
OWNER = "owner-1"
OTHER = "owner-2"


class FakeClock:
    """A clock that moves only when told; starts at the real time so file ages agree."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ClientGone(Exception):
    """What a chunk stream raises when the client disconnects."""


async def stream(chunks: Iterable[bytes], *, fail_after: bool = False) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if fail_after:
        raise ClientGone


async def reached(event: asyncio.Event, task: asyncio.Task[object]) -> None:
    """Wait until event is set; fail instead of hanging when the task ends before that."""
    waiter = asyncio.create_task(event.wait())
    await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
    if not event.is_set():
        waiter.cancel()
        pytest.fail(f"ended before the point the test waits for: {task.result()!r}")


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def sessions(root: Path, clock: FakeClock, *, max_open: int = 3) -> UploadSessions:
    return UploadSessions(
        root, max_bytes=MAX_BYTES, ttl_seconds=TTL, max_open_per_owner=max_open, clock=clock
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# Spool.receive: one-shot uploads


async def test_receive_writes_the_bytes_to_a_file_that_discard_deletes(tmp_path: Path) -> None:
    chunks = [b"first ", b"second ", b"x" * 100_000, b"last"]
    async with await Spool(tmp_path).receive(stream(chunks), max_bytes=MAX_BYTES) as spooled:
        assert spooled.size == sum(len(c) for c in chunks)
        assert spooled.path.read_bytes() == b"".join(chunks)
        assert spooled.path.is_relative_to(tmp_path)
    assert files_under(tmp_path) == []


async def test_receive_puts_each_chunk_on_disk_before_asking_for_the_next(
    tmp_path: Path,
) -> None:
    chunks = [bytes([n]) * WRITE_BATCH_BYTES for n in range(6)]
    on_disk: list[int] = []

    async def observed() -> AsyncIterator[bytes]:
        for chunk in chunks:
            on_disk.append(sum(path.stat().st_size for path in files_under(tmp_path)))
            yield chunk

    spooled = await Spool(tmp_path).receive(observed(), max_bytes=MAX_BYTES)
    # Nothing accumulates in memory: all chunks handed over so far are already in the file.
    assert on_disk == [n * WRITE_BATCH_BYTES for n in range(6)]
    assert spooled.path.read_bytes() == b"".join(chunks)
    await spooled.discard()


async def test_receive_accepts_exactly_the_limit(tmp_path: Path) -> None:
    spooled = await Spool(tmp_path).receive(stream([b"a" * 6, b"b" * 4]), max_bytes=10)
    assert spooled.size == 10
    await spooled.discard()


async def test_receive_over_the_limit_fails_at_once_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    asked = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal asked
        for chunk in [b"a" * 6, b"b" * 5, b"c" * 3]:
            asked += 1
            yield chunk

    with pytest.raises(InvalidArgument) as caught:
        await Spool(tmp_path).receive(counted(), max_bytes=10)
    assert caught.value.reason == Reason.IMAGE_TOO_LARGE
    assert caught.value.message == "invalid image: body must be at most 10 bytes"
    assert caught.value.violations == [FieldViolation("body", "must be at most 10 bytes")]
    assert asked == 2  # the chunk that passed the limit was the last one read
    assert files_under(tmp_path) == []


async def test_receive_deletes_the_file_when_the_stream_fails(tmp_path: Path) -> None:
    with pytest.raises(ClientGone):
        await Spool(tmp_path).receive(stream([b"partial"], fail_after=True), max_bytes=MAX_BYTES)
    assert files_under(tmp_path) == []


async def test_receive_deletes_the_file_when_cancelled(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"x" * (WRITE_BATCH_BYTES + 1)
        started.set()
        await asyncio.Event().wait()
        yield b"never"

    task = asyncio.create_task(Spool(tmp_path).receive(stalled(), max_bytes=MAX_BYTES))
    await reached(started, task)
    assert len(files_under(tmp_path)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files_under(tmp_path) == []


# UploadSessions: resumable uploads


async def test_a_session_is_created_appended_to_and_finished(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock)
    data = os.urandom(200_000)
    created = await uploads.create(OWNER, len(data))
    assert uuid.UUID(created.id).version == 4
    assert (created.owner_id, created.size_bytes, created.offset) == (OWNER, len(data), 0)
    assert created.create_time == clock.now
    assert created.expire_time == clock.now + timedelta(seconds=TTL)
    assert await uploads.get(OWNER, created.id) == created

    first = await uploads.append(OWNER, created.id, 0, stream([data[:70_000], data[70_000:90_000]]))
    assert first.offset == 90_000
    assert not first.complete
    assert (await uploads.get(OWNER, created.id)).offset == 90_000
    last = await uploads.append(OWNER, created.id, 90_000, stream([data[90_000:]]))
    assert last.offset == len(data)
    assert last.complete

    async with await uploads.finish(OWNER, created.id) as finished:
        assert finished.size == len(data)
        assert finished.path.read_bytes() == data
        with pytest.raises(NotFound):
            await uploads.get(OWNER, created.id)
    assert files_under(tmp_path) == []


async def test_an_upload_resumes_after_the_stream_broke_midway(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock)
    data = os.urandom(300_000)
    session = await uploads.create(OWNER, len(data))
    # Small chunks that the writer still held in memory when the stream broke count too.
    received = [data[:100_000], data[100_000:100_010], data[100_010:100_020]]
    with pytest.raises(ClientGone):
        await uploads.append(OWNER, session.id, 0, stream(received, fail_after=True))

    offset = (await uploads.get(OWNER, session.id)).offset
    assert offset == 100_020
    done = await uploads.append(OWNER, session.id, offset, stream([data[offset:]]))
    assert done.complete
    finished = await uploads.finish(OWNER, session.id)
    assert finished.path.read_bytes() == data
    await finished.discard()


async def test_a_cancelled_append_keeps_the_bytes_received_so_far(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock)
    session = await uploads.create(OWNER, 1000)
    sent = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"a" * 300
        sent.set()
        await asyncio.Event().wait()
        yield b"never"

    task = asyncio.create_task(uploads.append(OWNER, session.id, 0, stalled()))
    await reached(sent, task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await uploads.get(OWNER, session.id)).offset == 300
    # The cancelled append released the session: the client can carry on.
    assert (await uploads.append(OWNER, session.id, 300, stream([b"b" * 700]))).complete


async def test_a_chunk_being_written_when_the_append_is_cancelled_is_kept(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker thread cannot be stopped: the append must wait for the write under way before
    # it syncs, closes and reports the offset.
    uploads = sessions(tmp_path, clock)
    session = await uploads.create(OWNER, 2 * WRITE_BATCH_BYTES)
    loop = asyncio.get_running_loop()
    writing = asyncio.Event()
    gate = threading.Event()
    order: list[str] = []
    real_write, real_fsync_size = uploads_module._write_batch, uploads_module._fsync_size

    def held_write(fd: int, batch: list[bytes]) -> None:
        loop.call_soon_threadsafe(writing.set)
        gate.wait(timeout=60)
        real_write(fd, batch)
        order.append("write")

    def observed_fsync_size(fd: int) -> int:
        order.append("fsync")
        gate.set()  # a wrong order must fail the test, not hang it
        return real_fsync_size(fd)

    monkeypatch.setattr(uploads_module, "_write_batch", held_write)
    monkeypatch.setattr(uploads_module, "_fsync_size", observed_fsync_size)
    chunks = stream([b"a" * WRITE_BATCH_BYTES, b"never sent"])
    task = asyncio.create_task(uploads.append(OWNER, session.id, 0, chunks))
    await reached(writing, task)
    task.cancel()
    await asyncio.sleep(0)  # one loop turn: the cancellation reaches the append
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert order == ["write", "fsync"]
    assert (await uploads.get(OWNER, session.id)).offset == WRITE_BATCH_BYTES


async def test_a_wrong_offset_is_refused_naming_the_current_one(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock)
    session = await uploads.create(OWNER, 100)
    await uploads.append(OWNER, session.id, 0, stream([b"x" * 40]))
    for wrong in (0, 39, 41, 100):
        with pytest.raises(FailedPrecondition) as caught:
            await uploads.append(OWNER, session.id, wrong, stream([b"y"]))
        assert caught.value.reason == Reason.UPLOAD_OFFSET_MISMATCH
        assert "current offset 40" in caught.value.message
        assert caught.value.metadata == {"offset": "40"}
    assert (await uploads.get(OWNER, session.id)).offset == 40


async def test_bytes_beyond_the_declared_size_are_refused_keeping_the_earlier_chunks(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock)
    session = await uploads.create(OWNER, 100)
    with pytest.raises(InvalidArgument) as caught:
        await uploads.append(OWNER, session.id, 0, stream([b"a" * 60, b"b" * 30, b"c" * 20]))
    assert caught.value.reason == Reason.INVALID_FIELD
    assert [v.field for v in caught.value.violations] == ["body"]
    assert "more bytes than the declared size_bytes 100" in caught.value.violations[0].description
    assert (await uploads.get(OWNER, session.id)).offset == 90
    await uploads.append(OWNER, session.id, 90, stream([b"d" * 10]))
    finished = await uploads.finish(OWNER, session.id)
    assert finished.path.read_bytes() == b"a" * 60 + b"b" * 30 + b"d" * 10
    await finished.discard()


async def test_other_owners_malformed_unknown_and_expired_ids_get_the_same_not_found(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock)
    mine = await uploads.create(OWNER, 10)
    expiring = await uploads.create(OWNER, 10)
    clock.advance(TTL / 2)
    await uploads.append(OWNER, mine.id, 0, stream([b"x"]))  # activity keeps it open
    clock.advance(TTL / 2)

    attempts = [
        (OTHER, mine.id),
        (OWNER, "not-a-uuid"),
        (OWNER, "../../etc/passwd"),
        (OWNER, ""),
        (OWNER, str(uuid.uuid4())),
        (OWNER, expiring.id),
    ]
    for owner_id, upload_id in attempts:
        for call in (
            functools.partial(uploads.get, owner_id, upload_id),
            functools.partial(uploads.append, owner_id, upload_id, 0, stream([b"x"])),
            functools.partial(uploads.finish, owner_id, upload_id),
            functools.partial(uploads.cancel, owner_id, upload_id),
        ):
            with pytest.raises(NotFound) as caught:
                await call()
            assert (caught.value.reason, caught.value.message) == (
                Reason.UPLOAD_NOT_FOUND,
                "upload not found",
            ), (owner_id, upload_id)
    assert (await uploads.get(OWNER, mine.id)).offset == 1


async def test_a_second_append_while_one_runs_is_refused_as_busy(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock)
    session = await uploads.create(OWNER, 10)
    sent = asyncio.Event()
    go_on = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * 5
        sent.set()
        await go_on.wait()
        yield b"b" * 5

    first = asyncio.create_task(uploads.append(OWNER, session.id, 0, slow()))
    await reached(sent, first)
    for call in (
        functools.partial(uploads.append, OWNER, session.id, 0, stream([b"c"])),
        functools.partial(uploads.finish, OWNER, session.id),
        functools.partial(uploads.cancel, OWNER, session.id),
    ):
        with pytest.raises(Aborted) as caught:
            await call()
        assert caught.value.reason == Reason.UPLOAD_BUSY
    # Another owner probing the busy id learns nothing from it.
    with pytest.raises(NotFound):
        await uploads.append(OTHER, session.id, 0, stream([b"c"]))
    go_on.set()
    assert (await first).complete
    finished = await uploads.finish(OWNER, session.id)
    assert finished.path.read_bytes() == b"aaaaabbbbb"
    await finished.discard()


async def test_an_owner_may_hold_only_so_many_open_sessions(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock, max_open=2)
    first = await uploads.create(OWNER, 10)
    clock.advance(60)
    second = await uploads.create(OWNER, 10)
    with pytest.raises(ResourceExhausted) as caught:
        await uploads.create(OWNER, 10)
    assert caught.value.reason == Reason.UPLOAD_SESSIONS_EXHAUSTED
    # The oldest session expires first: that is when a new one fits.
    assert caught.value.retry_after_seconds == int(TTL) - 60
    await uploads.create(OTHER, 10)  # other owners are not affected

    await uploads.cancel(OWNER, second.id)
    await uploads.create(OWNER, 10)
    clock.advance(TTL - 60)  # the first one expires
    with pytest.raises(NotFound):
        await uploads.get(OWNER, first.id)
    await uploads.create(OWNER, 10)


async def test_the_declared_size_must_be_between_one_and_the_limit(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock)
    for size in (0, -1):
        with pytest.raises(InvalidArgument) as caught:
            await uploads.create(OWNER, size)
        assert caught.value.reason == Reason.INVALID_FIELD
        assert [v.field for v in caught.value.violations] == ["size_bytes"]
    with pytest.raises(InvalidArgument) as too_big:
        await uploads.create(OWNER, MAX_BYTES + 1)
    assert too_big.value.reason == Reason.IMAGE_TOO_LARGE
    assert [v.field for v in too_big.value.violations] == ["size_bytes"]
    assert f"at most {MAX_BYTES} bytes" in too_big.value.message
    assert (await uploads.create(OWNER, MAX_BYTES)).size_bytes == MAX_BYTES
    assert (await uploads.create(OWNER, 1)).size_bytes == 1


async def test_finishing_an_incomplete_upload_is_refused_and_keeps_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock)
    session = await uploads.create(OWNER, 10)
    await uploads.append(OWNER, session.id, 0, stream([b"x" * 4]))
    with pytest.raises(FailedPrecondition) as caught:
        await uploads.finish(OWNER, session.id)
    assert caught.value.reason == Reason.UPLOAD_INCOMPLETE
    assert "4 of its 10 bytes" in caught.value.message
    assert (await uploads.get(OWNER, session.id)).offset == 4


async def test_cancel_deletes_the_session_and_its_bytes(tmp_path: Path, clock: FakeClock) -> None:
    uploads = sessions(tmp_path, clock)
    kept = await uploads.create(OWNER, 10)
    session = await uploads.create(OWNER, 10)
    await uploads.append(OWNER, session.id, 0, stream([b"x" * 4]))
    await uploads.cancel(OWNER, session.id)
    with pytest.raises(NotFound):
        await uploads.get(OWNER, session.id)
    with pytest.raises(NotFound):
        await uploads.cancel(OWNER, session.id)
    assert not any(session.id in path.name for path in files_under(tmp_path))
    assert (await uploads.get(OWNER, kept.id)).offset == 0


async def test_sweep_deletes_only_expired_sessions_and_their_files(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock)
    old = await uploads.create(OWNER, 10)
    await uploads.append(OWNER, old.id, 0, stream([b"x" * 3]))
    other_old = await uploads.create(OTHER, 10)
    clock.advance(TTL / 2)
    fresh = await uploads.create(OWNER, 10)
    active = await uploads.create(OTHER, 10)
    clock.advance(TTL / 2)

    assert await uploads.sweep_expired() == 2
    names = {path.name for path in files_under(tmp_path)}
    assert not any(old.id in name or other_old.id in name for name in names)
    assert {f"{fresh.id}.json", f"{fresh.id}.part", f"{active.id}.json"} <= names
    assert (await uploads.get(OWNER, fresh.id)).offset == 0
    assert await uploads.sweep_expired() == 0

    assert await uploads.sweep_expired(clock.now + timedelta(seconds=TTL)) == 2
    assert files_under(tmp_path) == []


async def test_appending_extends_the_expiry(tmp_path: Path, clock: FakeClock) -> None:
    uploads = sessions(tmp_path, clock)
    session = await uploads.create(OWNER, 10)
    clock.advance(TTL - 1)
    appended = await uploads.append(OWNER, session.id, 0, stream([b"x"]))
    assert appended.expire_time == clock.now + timedelta(seconds=TTL)
    clock.advance(2)
    assert await uploads.sweep_expired() == 0
    assert (await uploads.get(OWNER, session.id)).offset == 1


async def test_sweep_removes_finished_files_nobody_discarded_after_a_ttl(
    tmp_path: Path, clock: FakeClock
) -> None:
    uploads = sessions(tmp_path, clock)
    session = await uploads.create(OWNER, 3)
    await uploads.append(OWNER, session.id, 0, stream([b"abc"]))
    clock.advance(TTL - 10)  # the last bytes arrived long before the finish
    finished = await uploads.finish(OWNER, session.id)
    clock.advance(20)
    assert await uploads.sweep_expired() == 0
    assert finished.path.read_bytes() == b"abc"  # maybe still being processed: kept
    clock.advance(TTL)
    await uploads.sweep_expired()
    assert not finished.path.exists()


async def test_a_restarted_service_finds_its_sessions_where_they_were(
    tmp_path: Path, clock: FakeClock
) -> None:
    data = os.urandom(50_000)
    before = sessions(tmp_path, clock, max_open=1)
    session = await before.create(OWNER, len(data))
    await before.append(OWNER, session.id, 0, stream([data[:20_000]]))

    after = sessions(tmp_path, clock, max_open=1)
    assert await after.get(OWNER, session.id) == await before.get(OWNER, session.id)
    with pytest.raises(ResourceExhausted):
        await after.create(OWNER, 10)
    await after.append(OWNER, session.id, 20_000, stream([data[20_000:]]))
    finished = await after.finish(OWNER, session.id)
    assert finished.path.read_bytes() == data
    await finished.discard()


async def test_the_spool_sweep_deletes_only_old_leftovers(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    old = await spool.receive(stream([b"left", b"over"]), max_bytes=100)
    fresh = await spool.receive(stream([b"in use"]), max_bytes=100)
    an_hour_ago = time.time() - 3601
    os.utime(old.path, (an_hour_ago, an_hour_ago))

    assert await spool.sweep(3600) == 1

    assert not old.path.exists()
    assert fresh.path.read_bytes() == b"in use"
