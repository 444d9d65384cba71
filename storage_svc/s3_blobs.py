"""The blob store on an S3-compatible object store (AWS S3, MinIO, Ceph, moto, ...).

Each blob is the object <prefix>blobs/ab/cd/<key> (the layout of blobs.py). S3 has no rename, so a
blob set aside is copied to <prefix>collecting/ab/cd/<key> and then deleted from its place; put_back
copies it home (unless the key was stored again meanwhile) and deletes the copy. The collector's
safety argument (collector.py) holds because set_aside has fully removed the blob before the
collector asks whether an image names it.

Memory stays flat: files are uploaded a part at a time and downloads are read a chunk at a time.
Every request has a connect and a read deadline and a bounded number of retries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from storage_svc.blobs import BlobMissing, check_age, check_range, fan_out_name, is_key

if TYPE_CHECKING:
    from aiobotocore.response import StreamingBody
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

PART_BYTES = 8 * 1024 * 1024
"""Size of each part of a multipart upload (S3 wants at least 5 MiB for all but the last)."""

MAX_ATTEMPTS = 3
"""Attempts per request by default, the first included (retries back off; connection failures,
throttling and 5xx answers are retried)."""

LIST_PAGE_KEYS = 1000
"""Keys per ListObjectsV2 page (S3's own maximum)."""

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})


class S3BlobStore:
    """BlobStore on a bucket of an S3-compatible object store; open() before use, close() after."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        prefix: str = "",
        timeout_seconds: float = 10.0,
        max_attempts: int = MAX_ATTEMPTS,
        create_bucket: bool = False,
    ) -> None:
        if not bucket:
            raise ValueError("bucket is required")
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, not {timeout_seconds}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        self._bucket = bucket
        self._endpoint_url = endpoint_url
        self._region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._live = f"{prefix}blobs/"
        self._aside = f"{prefix}collecting/"
        self._timeout = timeout_seconds
        self._max_attempts = max_attempts
        self._create_bucket = create_bucket
        self._stack: AsyncExitStack | None = None
        self._client: S3Client | None = None

    def __repr__(self) -> str:
        """Name the bucket and endpoint, never the credentials."""
        return (
            f"S3BlobStore(bucket={self._bucket!r}, endpoint_url={self._endpoint_url!r}, "
            f"region={self._region!r}, prefix={self._live.removesuffix('blobs/')!r})"
        )

    async def open(self) -> None:
        """Create the S3 client (no request is sent yet, unless the store was made with
        create_bucket: then a missing bucket is created); opening an open store does nothing."""
        if self._client is not None:
            return
        config = AioConfig(
            connect_timeout=self._timeout,
            read_timeout=self._timeout,
            retries={"max_attempts": self._max_attempts, "mode": "standard"},
            # Bucket names as host names need DNS the way AWS has it; other servers (and AWS
            # too) answer at <endpoint>/<bucket>/.
            s3={"addressing_style": "path"} if self._endpoint_url else {},
            # The newer default checksum headers are refused by several S3-compatible servers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    region_name=self._region,
                    endpoint_url=self._endpoint_url,
                    aws_access_key_id=self._access_key_id,
                    aws_secret_access_key=self._secret_access_key,
                    config=config,
                )
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        if self._create_bucket:
            await self.ensure_bucket()

    async def close(self) -> None:
        """Close the client and its connection pool; closing a closed store does nothing."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (for development servers)."""
        s3 = self._s3
        try:
            await s3.head_bucket(Bucket=self._bucket)
            return
        except ClientError as error:
            if _code(error) not in _NO_BUCKET:
                raise
        try:
            if self._region == "us-east-1":
                # us-east-1 is the default location and refuses to be named as a constraint.
                await s3.create_bucket(Bucket=self._bucket)
            else:
                # Other servers name their regions as they like, not only as AWS does.
                location: Any = self._region
                await s3.create_bucket(
                    Bucket=self._bucket, CreateBucketConfiguration={"LocationConstraint": location}
                )
        except ClientError as error:
            # Another process may have created it between the two requests.
            if _code(error) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    async def put(self, key: str, data: bytes) -> None:
        """Store data under key; an object already there is kept (same key, same bytes)."""
        name = self._name(key)
        if await self._present(name):
            return
        await self._s3.put_object(Bucket=self._bucket, Key=name, Body=data)

    async def put_file(self, key: str, path: Path) -> None:
        """Upload the file at path under key a part (PART_BYTES) at a time; an object already
        there is kept."""
        name = self._name(key)
        if await self._present(name):
            return
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            first = await asyncio.to_thread(handle.read, PART_BYTES)
            if len(first) < PART_BYTES:
                await self._s3.put_object(Bucket=self._bucket, Key=name, Body=first)
            else:
                await self._upload_in_parts(name, first, handle)
        finally:
            handle.close()

    async def exists(self, key: str) -> bool:
        """Tell whether a blob is stored under key."""
        return await self._present(self._name(key))

    async def size(self, key: str) -> int:
        """Return the blob's length in bytes; BlobMissing when none is stored under key."""
        name = self._name(key)
        try:
            head = await self._s3.head_object(Bucket=self._bucket, Key=name)
        except ClientError as error:
            if _code(error) in _MISSING:
                raise BlobMissing(key) from None
            raise
        return head["ContentLength"]

    def chunks(
        self, key: str, chunk_size: int, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Yield bytes [start, end) of the blob in chunks of at most chunk_size bytes, from one
        ranged GetObject; BlobMissing on the first iteration when none is stored under key."""
        # Checked here, not in the generator, so that a bad argument fails at the call.
        name = self._name(key)
        check_range(chunk_size, start, end)
        return self._chunks(key, name, chunk_size, start, end)

    async def set_aside(self, key: str) -> None:
        """Copy the blob under the collecting prefix, then delete it from its place; a blob
        already set aside, or missing, is left as it is."""
        name = self._name(key)
        if await self._copy(name, self._aside_name(key)):
            await self._s3.delete_object(Bucket=self._bucket, Key=name)

    async def put_back(self, key: str) -> None:
        """Copy a set-aside blob home (unless the key was stored again meanwhile), then delete
        the set-aside copy."""
        name = self._name(key)
        aside = self._aside_name(key)
        if not await self._present(name) and not await self._copy(aside, name):
            return
        await self._s3.delete_object(Bucket=self._bucket, Key=aside)

    async def discard(self, key: str) -> None:
        """Delete the set-aside copy of the blob; nothing set aside: no-op (S3 deletes are)."""
        await self._s3.delete_object(Bucket=self._bucket, Key=self._aside_name(key))

    def keys_older_than(self, seconds: float) -> AsyncIterator[str]:
        """Yield the key of every stored (not set-aside) blob last written more than seconds
        ago, listing a page of objects at a time."""
        check_age(seconds)
        return self._keys_written_before(datetime.now(UTC) - timedelta(seconds=seconds))

    @property
    def _s3(self) -> S3Client:
        """The open client; RuntimeError before open() or after close()."""
        if self._client is None:
            raise RuntimeError("S3BlobStore is not open: call open() first")
        return self._client

    def _name(self, key: str) -> str:
        """The object name of a stored blob."""
        return self._live + fan_out_name(key)

    def _aside_name(self, key: str) -> str:
        """The object name of a set-aside blob (outside the listing of stored ones)."""
        return self._aside + fan_out_name(key)

    async def _present(self, name: str) -> bool:
        """Tell whether the object exists (HeadObject)."""
        try:
            await self._s3.head_object(Bucket=self._bucket, Key=name)
        except ClientError as error:
            if _code(error) in _MISSING:
                return False
            raise
        return True

    async def _copy(self, source: str, target: str) -> bool:
        """Copy one object of the bucket to another name; False when the source is missing."""
        try:
            await self._s3.copy_object(
                Bucket=self._bucket, Key=target, CopySource={"Bucket": self._bucket, "Key": source}
            )
        except ClientError as error:
            if _code(error) in _MISSING:
                return False
            raise
        return True

    async def _upload_in_parts(self, name: str, first: bytes, handle: BinaryIO) -> None:
        """Multipart upload holding one part in memory at a time; aborted on any failure so no
        parts are left behind to pay for."""
        s3 = self._s3
        upload = await s3.create_multipart_upload(Bucket=self._bucket, Key=name)
        upload_id = upload["UploadId"]
        parts: list[CompletedPartTypeDef] = []
        try:
            part = first
            while part:
                number = len(parts) + 1
                sent = await s3.upload_part(
                    Bucket=self._bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=part
                )
                parts.append({"ETag": sent["ETag"], "PartNumber": number})
                part = await asyncio.to_thread(handle.read, PART_BYTES)
            await s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # The original failure is what the caller needs to see; a failed abort only leaves
            # parts for the bucket's lifecycle rule to clear.
            with contextlib.suppress(Exception):
                await s3.abort_multipart_upload(Bucket=self._bucket, Key=name, UploadId=upload_id)
            raise

    async def _chunks(
        self, key: str, name: str, chunk_size: int, start: int, end: int | None
    ) -> AsyncIterator[bytes]:
        """The generator behind chunks."""
        if end == start:
            # No byte is wanted, and S3 has no empty range; the blob must still be there.
            if not await self._present(name):
                raise BlobMissing(key)
            return
        try:
            if start == 0 and end is None:
                response = await self._s3.get_object(Bucket=self._bucket, Key=name)
            else:
                last = "" if end is None else str(end - 1)
                response = await self._s3.get_object(
                    Bucket=self._bucket, Key=name, Range=f"bytes={start}-{last}"
                )
        except ClientError as error:
            if _code(error) in _MISSING:
                raise BlobMissing(key) from None
            if _code(error) == "InvalidRange":  # start at or beyond the end of the blob
                return
            raise
        body = response["Body"]
        try:
            while chunk := await _read_up_to(body, chunk_size):
                yield chunk
        finally:
            # Releases the connection when the reader stops early.
            body.close()

    async def _keys_written_before(self, cutoff: datetime) -> AsyncIterator[str]:
        """The generator behind keys_older_than: one page of the listing in memory at a time."""
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket,
            Prefix=self._live,
            PaginationConfig={"PageSize": LIST_PAGE_KEYS},
        )
        async for page in pages:
            for item in page.get("Contents", []):
                relative = item["Key"].removeprefix(self._live)
                key = relative.rpartition("/")[2]
                # Anything else under the prefix (not put there by this store) is not a blob.
                if is_key(key) and relative == fan_out_name(key) and item["LastModified"] <= cutoff:
                    yield key


async def _read_up_to(body: StreamingBody, size: int) -> bytes:
    """Read size bytes from body, fewer only at its end: a network read may return any amount,
    and callers send each chunk on as one message."""
    chunk = await body.read(size)
    if not chunk or len(chunk) == size:
        return bytes(chunk)
    buffer = bytearray(chunk)
    while len(buffer) < size and (more := await body.read(size - len(buffer))):
        buffer += more
    return bytes(buffer)


def _code(error: ClientError) -> str:
    """The S3 error code of a failed request ("404" for HEAD requests, which have no body)."""
    return str(error.response.get("Error", {}).get("Code", ""))
