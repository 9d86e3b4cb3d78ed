from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from adapters.upload_budget import UploadBudget
from domain.errors import (
    GatewayError,
    IncompleteBody,
    NodeUnavailable,
    NodeUnreachable,
    ObjectNotFound,
)
from domain.node import Node
from domain.object_id import ObjectId
from domain.ports import ObjectInfo, StoredObject

__all__ = ["MinioObjectStorage", "MinioSettings"]

_T = TypeVar("_T")
# Bodies up to this size are gathered on the event loop and handed over whole: cheaper than
# bridging them chunk by chunk into the worker thread.
_SMALL_BODY_BYTES = 256 * 1024
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


@dataclass(frozen=True, slots=True)
class MinioSettings:
    bucket: str
    connect_timeout_seconds: float
    read_timeout_seconds: float
    retries: int
    connection_pool_size: int
    # S3 multipart parts are at least 5 MiB; minio-py holds one part (plus copies) per upload.
    part_size_bytes: int
    download_chunk_bytes: int
    body_read_timeout_seconds: float


@dataclass(frozen=True, slots=True)
class _ClientKey:
    endpoint: str
    access_key: str
    secret_key: str


class MinioObjectStorage:
    """Objects on MinIO (S3) nodes, through minio-py, streamed both ways with bounded memory.

    minio-py is synchronous: every call runs in the given (bounded) executor, and bodies are bridged
    chunk by chunk between the event loop and the worker threads. Every SDK and urllib3 error is
    translated into a domain error here; none crosses this class.
    """

    def __init__(
        self, settings: MinioSettings, executor: Executor, upload_budget: UploadBudget
    ) -> None:
        self._settings = settings
        self._executor = executor
        self._upload_budget = upload_budget
        self._clients: dict[str, tuple[_ClientKey, Minio]] = {}
        self._buckets_ready: set[_ClientKey] = set()

    async def exists(self, node: Node, object_id: ObjectId) -> bool:
        client = self._client_for(node)
        try:
            await self._run(node, client.stat_object, self._settings.bucket, object_id.value)
        except ObjectNotFound:
            return False
        return True

    async def put(
        self,
        node: Node,
        object_id: ObjectId,
        body: AsyncIterator[bytes],
        length: int | None,
        content_type: str,
    ) -> ObjectInfo:
        client = self._client_for(node)
        await self._ensure_bucket(node, client)
        part_size = self._settings.part_size_bytes
        buffered = part_size if length is None else min(length, part_size)
        async with self._upload_budget.reserve(buffered):
            reader: io.BytesIO | _BlockingBodyReader
            if length is not None and length <= _SMALL_BODY_BYTES:
                reader = io.BytesIO(
                    await _gather_small_body(body, length, self._settings.body_read_timeout_seconds)
                )
            else:
                reader = _BlockingBodyReader(
                    body,
                    asyncio.get_running_loop(),
                    length,
                    self._settings.body_read_timeout_seconds,
                )
            try:
                result = await self._run(
                    node,
                    client.put_object,
                    self._settings.bucket,
                    object_id.value,
                    reader,
                    -1 if length is None else length,
                    content_type=content_type,
                    part_size=part_size,
                    # One part in flight per upload keeps the memory per upload at one part.
                    num_parallel_uploads=1,
                )
            except ObjectNotFound as exc:
                # The bucket vanished (e.g. the node's volume was replaced): recreate it next time.
                self._buckets_ready.discard(self._clients[node.name][0])
                raise NodeUnavailable(node.name, "its bucket disappeared during the write") from exc
        size = reader.bytes_read if isinstance(reader, _BlockingBodyReader) else length
        assert size is not None
        return ObjectInfo(size=size, content_type=content_type, etag=result.etag or "")

    async def get(self, node: Node, object_id: ObjectId) -> StoredObject:
        client = self._client_for(node)
        chunk_size = self._settings.download_chunk_bytes
        opened = await self._run(
            node, _open_object, client, self._settings.bucket, object_id.value, chunk_size
        )
        response = opened.response

        async def read_chunks() -> AsyncIterator[bytes]:
            if opened.small_body is not None:
                if opened.small_body:
                    yield opened.small_body
                return
            assert response is not None
            chunks = response.stream(chunk_size, decode_content=False)
            while chunk := await self._run(node, next, chunks, b""):
                yield chunk

        async def close() -> None:
            if response is not None:
                response.close()
                response.release_conn()

        return StoredObject(info=opened.info, chunks=read_chunks(), close=close)

    def close(self) -> None:
        for _, client in self._clients.values():
            _http_client_of(client).clear()
        self._clients.clear()

    def _client_for(self, node: Node) -> Minio:
        if node.endpoint is None:
            raise NodeUnavailable(node.name, "the node has no address")
        key = _ClientKey(node.endpoint, node.credentials.access_key, node.credentials.secret_key)
        known = self._clients.get(node.name)
        if known is not None and known[0] == key:
            return known[1]
        if known is not None:
            # The node moved or changed keys: its old connections point at the wrong place.
            _http_client_of(known[1]).clear()
        client = Minio(
            key.endpoint,
            access_key=key.access_key,
            secret_key=key.secret_key,
            secure=False,
            # MinIO's default region; naming it also saves a GetBucketLocation round trip.
            region="us-east-1",
            http_client=self._new_http_client(),
        )
        self._clients[node.name] = (key, client)
        return client

    def _new_http_client(self) -> urllib3.PoolManager:
        settings = self._settings
        return urllib3.PoolManager(
            # Every worker thread may talk to the same node at once.
            maxsize=settings.connection_pool_size,
            block=False,
            timeout=urllib3.Timeout(
                connect=settings.connect_timeout_seconds, read=settings.read_timeout_seconds
            ),
            retries=urllib3.Retry(
                total=settings.retries,
                read=0,
                backoff_factor=0.1,
                status_forcelist=(500, 502, 503, 504),
            ),
        )

    async def _ensure_bucket(self, node: Node, client: Minio) -> None:
        key = self._clients[node.name][0]
        if key not in self._buckets_ready:
            await self._run(node, _create_bucket_if_missing, client, self._settings.bucket)
            self._buckets_ready.add(key)

    async def _run(
        self, node: Node, function: Callable[..., _T], *args: object, **kwargs: object
    ) -> _T:
        """Run a blocking SDK call in the executor, translating its failures at this border."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))
        except GatewayError:
            raise
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            _raise_translated(exc, node.name)


@dataclass(frozen=True, slots=True)
class _OpenedObject:
    info: ObjectInfo
    # The whole body when it fits in one chunk (read in the same worker-thread hop as the request);
    # otherwise None, and the body streams from ``response``.
    small_body: bytes | None
    response: urllib3.BaseHTTPResponse | None


def _open_object(client: Minio, bucket: str, name: str, chunk_size: int) -> _OpenedObject:
    response = client.get_object(bucket, name)
    headers = response.headers
    info = ObjectInfo(
        size=int(headers.get("Content-Length", "0")),
        content_type=headers.get("Content-Type") or "application/octet-stream",
        etag=headers.get("ETag", "").strip('"'),
    )
    if info.size > chunk_size:
        return _OpenedObject(info=info, small_body=None, response=response)
    try:
        return _OpenedObject(info=info, small_body=response.read(), response=None)
    finally:
        response.close()
        response.release_conn()


def _create_bucket_if_missing(client: Minio, bucket: str) -> None:
    if client.bucket_exists(bucket):
        return
    try:
        client.make_bucket(bucket)
    except (S3Error, InvalidResponseError) as exc:
        # Another request or gateway replica created it first.
        if not _is_conflict(exc):
            raise


def _raise_translated(exc: Exception, node_name: str) -> NoReturn:
    status = _status_of(exc)
    if (isinstance(exc, S3Error) and exc.code in _NOT_FOUND_CODES) or status == 404:
        raise ObjectNotFound("no object is stored under this ID") from exc
    if isinstance(exc, S3Error):
        raise NodeUnavailable(node_name, f"it answered {exc.code}") from exc
    if isinstance(exc, ServerError | InvalidResponseError):
        raise NodeUnavailable(node_name, f"it answered HTTP {status}") from exc
    raise NodeUnreachable(node_name, f"it cannot be reached ({type(exc).__name__})") from exc


def _status_of(exc: Exception) -> int | None:
    if isinstance(exc, S3Error):
        return exc.response.status if exc.response is not None else None
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, InvalidResponseError):
        # minio-py raises this for error bodies that are not application/xml (e.g. text/xml) and
        # keeps the HTTP status only as its first constructor argument.
        code = getattr(exc, "_code", None)
        return code if isinstance(code, int) else None
    return None


def _is_conflict(exc: S3Error | InvalidResponseError) -> bool:
    if isinstance(exc, S3Error):
        return exc.code in _BUCKET_EXISTS_CODES
    return _status_of(exc) == 409


def _http_client_of(client: Minio) -> urllib3.PoolManager:
    return client._http  # noqa: SLF001 - minio-py offers no public way to close its pool


async def _gather_small_body(
    body: AsyncIterator[bytes], length: int, timeout_seconds: float
) -> bytes:
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(timeout_seconds):
            async for chunk in body:
                received += len(chunk)
                if received > length:
                    raise IncompleteBody("the body is longer than its Content-Length")
                chunks.append(chunk)
    except TimeoutError:
        raise IncompleteBody(f"the client sent no body for {timeout_seconds:g} seconds") from None
    if received != length:
        raise IncompleteBody(f"the body ended after {received} of {length} bytes")
    return b"".join(chunks)


class _BlockingBodyReader:
    """A blocking ``read()`` over an async chunk iterator, for minio-py running in a worker thread.

    Each ``read(n)`` gathers up to ``n`` bytes and joins them once: minio-py concatenates what
    ``read`` returns with ``+=``, which is quadratic when fed small chunks.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        loop: asyncio.AbstractEventLoop,
        expected_length: int | None,
        timeout_seconds: float,
    ) -> None:
        self._chunks = chunks
        self._loop = loop
        self._expected_length = expected_length
        self._timeout_seconds = timeout_seconds
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._finished = False
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        while not self._finished and (size < 0 or self._pending_size < size):
            chunk = self._next_chunk()
            if chunk is None:
                self._finished = True
                self._check_complete()
            elif chunk:
                self._pending.append(chunk)
                self._pending_size += len(chunk)
        if size < 0 or self._pending_size <= size:
            data = b"".join(self._pending)
            self._pending.clear()
        else:
            # Split the last chunk so that exactly ``size`` bytes are returned.
            joined = b"".join(self._pending)
            data, rest = joined[:size], joined[size:]
            self._pending = [rest]
        self._pending_size -= len(data)
        return data

    def _next_chunk(self) -> bytes | None:
        async def next_chunk() -> bytes | None:
            return await anext(self._chunks, None)

        future = asyncio.run_coroutine_threadsafe(next_chunk(), self._loop)
        try:
            chunk = future.result(timeout=self._timeout_seconds)
        except FutureTimeout as exc:
            future.cancel()
            raise IncompleteBody(
                f"the client sent no data for {self._timeout_seconds:g} seconds"
            ) from exc
        if chunk is not None:
            self.bytes_read += len(chunk)
            if self._expected_length is not None and self.bytes_read > self._expected_length:
                raise IncompleteBody("the body is longer than its Content-Length")
        return chunk

    def _check_complete(self) -> None:
        if self._expected_length is not None and self.bytes_read != self._expected_length:
            raise IncompleteBody(
                f"the body ended after {self.bytes_read} of {self._expected_length} bytes"
            )
