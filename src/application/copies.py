"""Copying one version of an object from one node to another, keeping its version: what a
rebalance moves and a read repairs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from application.node_access import NodeAccess
from domain.errors import CopyMismatch, ObjectNotFound, PreconditionFailed
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import (
    TOMBSTONE_CONTENT_TYPE,
    ObjectInfo,
    StoredObject,
    WriteCondition,
    tombstone_body,
)
from domain.ports import ObjectStorage
from domain.versions import Version

__all__ = ["copy_version", "head_or_none"]

_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")


async def head_or_none(
    storage: ObjectStorage, access: NodeAccess, node: Node, object_id: ObjectId
) -> ObjectInfo | None:
    try:
        return await access.call(node, lambda: storage.head(node, object_id))
    except ObjectNotFound:
        return None


async def copy_version(  # noqa: PLR0917 - a copy's two ends and what it copies
    storage: ObjectStorage,
    access: NodeAccess,
    source: Node,
    target: Node,
    object_id: ObjectId,
    info: ObjectInfo,
    on_target: ObjectInfo | None,
) -> None:
    """Copy ``info`` from ``source`` to ``target``, keeping its version, only if ``target`` still
    holds ``on_target`` (a conditional write, and a look before the last chunk for nodes that
    ignore conditions); then check what landed. ``PreconditionFailed`` when either end changed."""
    condition = (
        WriteCondition(only_if_absent=True)
        if on_target is None
        else WriteCondition(only_if_etag=on_target.etag)
    )

    async def unchanged() -> None:
        now = await head_or_none(storage, access, target, object_id)
        if (now is None) != (on_target is None) or (
            now is not None and on_target is not None and now.etag != on_target.etag
        ):
            raise PreconditionFailed("the target changed during the copy")

    if info.deleted and info.version is not None:
        # A tombstone is its version: nothing of it needs reading.
        tombstone = info.version
        body = tombstone_body(tombstone)
        await access.call(
            target,
            lambda: storage.put(
                target,
                object_id,
                _held_back(body, before_last=unchanged),
                len(body),
                TOMBSTONE_CONTENT_TYPE,
                version=tombstone,
                deleted=True,
                condition=condition,
            ),
        )
        return
    version = info.version or Version.of_unversioned(info.last_modified)
    stored = await access.call(source, lambda: storage.get(source, object_id))
    digest = hashlib.md5(usedforsecurity=False)
    try:
        if stored.info.rank != info.rank:
            raise PreconditionFailed("the source changed since it was asked")
        written = await access.call(
            target,
            lambda: storage.put(
                target,
                object_id,
                _digesting(stored, digest.update, before_last=unchanged),
                stored.info.size,
                stored.info.content_type,
                version=version,
                condition=condition,
            ),
        )
    finally:
        await stored.close()
    checksum = digest.hexdigest()
    if _PLAIN_MD5.fullmatch(stored.info.etag) and stored.info.etag != checksum:
        raise CopyMismatch(f"read {checksum} from the holder, which reported {stored.info.etag}")
    if _PLAIN_MD5.fullmatch(written.etag) and written.etag != checksum:
        raise CopyMismatch(f"the target stored {written.etag}, not {checksum}")


async def _held_back(
    data: bytes, *, before_last: Callable[[], Awaitable[None]]
) -> AsyncIterator[bytes]:
    await before_last()
    yield data


async def _digesting(
    stored: StoredObject,
    update: Callable[[bytes], object],
    *,
    before_last: Callable[[], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """The stored object's bytes, hashed as they pass; the last chunk waits for ``before_last``."""
    held: bytes | None = None
    async for chunk in stored.chunks:
        update(chunk)
        if held is not None:
            yield held
        held = chunk
    await before_last()
    if held is not None:
        yield held
