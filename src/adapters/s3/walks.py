"""Walking a node's bucket: every version of every ID, in ID order, and the objects kept under the
layout from before versions had keys (each a HEAD, until ``repair`` moves them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from adapters.s3.keys import VERSIONS_PREFIX, after_every_version_of, legacy_key, version_of
from adapters.s3.listings import list_keys
from adapters.s3.responses import info_from, raise_for
from adapters.s3.transport import S3Transport
from domain.node import Node
from domain.objects import StoredVersion, VersionKind
from domain.versions import Version

__all__ = ["legacy_version", "walk"]


async def legacy_version(transport: S3Transport, node: Node, raw_id: str) -> StoredVersion | None:
    """The object kept under the ID's own key (the layout before versions had keys), as a
    version: its version from its metadata (or its Last-Modified); None when there is none."""
    response = await transport.request(node, "HEAD", legacy_key(raw_id))
    async with response:
        if response.status == 404:
            return None
        if response.status != 200:
            await raise_for(node, response, transport.settings.first_byte_timeout_seconds)
        info = info_from(response.headers)
    return StoredVersion(
        info.version or Version.of_unversioned(info.last_modified),
        VersionKind.TOMBSTONE if info.deleted else VersionKind.DATA,
        info.size,
        info.etag,
        legacy=True,
    )


def walk(
    transport: S3Transport, node: Node, *, prefix: str, start_after: str, legacy: bool
) -> AsyncIterator[tuple[str, StoredVersion]]:
    """Every version the node holds (see ``ObjectStorage.walk``)."""
    versions = _walk_versions(transport, node, prefix, start_after)
    if not legacy:
        return versions
    return _merged(_walk_legacy(transport, node, prefix, start_after), versions)


async def _walk_versions(
    transport: S3Transport, node: Node, prefix: str, start_after: str
) -> AsyncIterator[tuple[str, StoredVersion]]:
    async for listed in list_keys(
        transport,
        node,
        prefix=VERSIONS_PREFIX + prefix,
        start_after=after_every_version_of(start_after) if start_after else "",
    ):
        parsed = version_of(listed.key)
        if parsed is not None:
            raw_id, version, kind = parsed
            yield (
                raw_id,
                StoredVersion(
                    version, kind, listed.size, listed.etag, age_seconds=listed.age_seconds
                ),
            )


async def _walk_legacy(
    transport: S3Transport, node: Node, prefix: str, start_after: str
) -> AsyncIterator[tuple[str, StoredVersion]]:
    # Only the keys at the top: the "folders" (by-id/, .gateway/) are skipped by the node.
    async for listed in list_keys(
        transport, node, prefix=prefix, start_after=start_after, delimiter="/"
    ):
        if listed.key.startswith("."):
            continue
        # The listing does not carry the version: one HEAD each, until repair moves them.
        stored = await legacy_version(transport, node, listed.key)
        if stored is not None:
            yield listed.key, stored


async def _merged(
    first: AsyncIterator[tuple[str, StoredVersion]],
    second: AsyncIterator[tuple[str, StoredVersion]],
) -> AsyncIterator[tuple[str, StoredVersion]]:
    """Two walks in ID order as one; of the same ID, ``first``'s entries first."""
    try:
        a, b = await anext(first, None), await anext(second, None)
        while a is not None or b is not None:
            if b is None or (a is not None and a[0] <= b[0]):
                assert a is not None
                yield a
                a = await anext(first, None)
            else:
                yield b
                b = await anext(second, None)
    finally:
        for walk in (first, second):
            close: Callable[[], Awaitable[None]] | None = getattr(walk, "aclose", None)
            if close is not None:
                await close()
