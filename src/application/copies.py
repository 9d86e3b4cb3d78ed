"""Copying one version of an object from one node to another, as it is: what a rebalance moves, a
read repairs, and a write puts elsewhere when its node is being drained.

A version is written once and never changed, so a copy cannot conflict with anything: the target
holds the same version afterwards, or one more record of it. The node checks the bytes it
receives against the source's checksum, so a copy damaged on the way is refused, never stored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable

from application.node_access import NodeAccess
from domain.errors import CopyMismatch
from domain.node import Node
from domain.object_id import ObjectId
from domain.objects import DEFAULT_CONTENT_TYPE, StoredVersion, VersionKind
from domain.ports import ObjectStorage

__all__ = ["copy_version"]

_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")


async def copy_version(  # noqa: PLR0917 - a copy's two ends and what it copies
    storage: ObjectStorage,
    access: NodeAccess,
    source: Node,
    target: Node,
    object_id: ObjectId,
    stored: StoredVersion,
) -> StoredVersion:
    """Copy ``stored`` from ``source`` to ``target`` with its version and kind (an object kept
    under the old layout gets a version key of its own); what the target now holds."""
    if stored.deleted:
        # A tombstone is its version and kind: nothing of it needs reading.
        return await access.call(
            target,
            lambda: storage.put(
                target,
                object_id,
                stored.version,
                stored.kind,
                _single(b""),
                0,
                DEFAULT_CONTENT_TYPE,
            ),
        )
    opened = await access.call(source, lambda: storage.open(source, object_id, stored))
    # An object's ETag is the MD5 of its bytes unless it was uploaded in parts.
    checksum = stored.etag if _PLAIN_MD5.fullmatch(stored.etag) else None
    digest = hashlib.md5(usedforsecurity=False)
    try:
        if opened.info.size != stored.size:
            raise CopyMismatch(
                f"{source.name} holds {opened.info.size} bytes of it, not the {stored.size} listed",
                node_name=source.name,
            )
        written = await access.call(
            target,
            lambda: storage.put(
                target,
                object_id,
                stored.version,
                stored.kind,
                _digesting(opened.chunks, digest.update),
                stored.size,
                opened.info.content_type,
                content_md5=checksum,
            ),
        )
    finally:
        await opened.close()
    if (
        checksum is None
        and _PLAIN_MD5.fullmatch(written.etag)
        and written.etag != digest.hexdigest()
    ):
        # No checksum to send ahead (the source went up in parts): checked after, and undone.
        await access.call(target, lambda: storage.remove(target, object_id, written))
        raise CopyMismatch(
            f"{target.name} stored {written.etag}, not the {digest.hexdigest()} read",
            node_name=target.name,
        )
    return written


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _digesting(
    chunks: AsyncIterator[bytes], update: Callable[[bytes], object]
) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        update(chunk)
        yield chunk


def is_tombstone_kind(kind: VersionKind) -> bool:
    return kind is VersionKind.TOMBSTONE
