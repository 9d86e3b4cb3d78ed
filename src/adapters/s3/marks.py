"""What is recorded about a node on the node itself (the ``NodeMarking`` and ``Leases`` ports):
its drain mark, whether it holds anything in the layout from before versions had keys, and the
claims on job leases. All of it sits under ``.gateway/``, where no object ID can go."""

from __future__ import annotations

from adapters.s3.buckets import Buckets
from adapters.s3.keys import (
    DRAIN_MARK_KEY,
    LEASES_PREFIX,
    MARKS_PREFIX,
    MIGRATED_MARK_KEY,
    RING_MARK_PREFIX,
    claim_key,
    claim_of,
    ring_key,
    ring_of,
)
from adapters.s3.listings import list_keys
from adapters.s3.responses import raise_for
from adapters.s3.transport import S3Transport
from adapters.s3.uploads import Uploads
from domain.leases import LeaseClaim
from domain.node import DrainState, Node, NodeMarks

__all__ = ["NodeMarksOnS3"]

_DRAIN_STATE_HEADER = "x-amz-meta-gateway-drain"


class NodeMarksOnS3:
    def __init__(self, transport: S3Transport, buckets: Buckets, uploads: Uploads) -> None:
        self._transport = transport
        self._buckets = buckets
        self._uploads = uploads

    async def marks(self, node: Node) -> NodeMarks:
        drain: DrainState | None = None
        migrated = False
        listed_any = False
        rings: list[tuple[str, bool]] = []
        async for listed in list_keys(self._transport, node, prefix=MARKS_PREFIX, delimiter="/"):
            listed_any = True
            ring = ring_of(listed.key)
            if ring is not None:
                rings.append(ring)
            elif listed.key == MIGRATED_MARK_KEY:
                migrated = True
            elif listed.key == DRAIN_MARK_KEY:
                drain = await self._drain_state(node)
        if not listed_any and (not await self._has_bucket(node) or await self._is_empty(node)):
            # No bucket, or one made beforehand that holds nothing: nothing in any layout.
            return NodeMarks(migrated=True, fresh=True)
        if not migrated and not await self._holds_legacy_keys(node):
            # A bucket made by hand (or by a tool) before any gateway wrote to it: nothing of the
            # old layout to look for, so reads need not ask for it until a repair says so.
            await self.mark_migrated(node)
            migrated = True
        # Two ring marks at once (a rebalance replacing one) say nothing for sure.
        settled = rings[0][0] if len(rings) == 1 and rings[0][1] else None
        settling = rings[0][0] if len(rings) == 1 and not rings[0][1] else None
        return NodeMarks(drain, migrated, settled, settling)

    async def _is_empty(self, node: Node) -> bool:
        async for _ in list_keys(self._transport, node, page_size=1):
            return False
        return True

    async def _holds_legacy_keys(self, node: Node) -> bool:
        """Whether any key sits at the bucket's top, where the layout before versions had keys of
        their own kept objects (the marks and versions are in folders, which the node skips)."""
        async for listed in list_keys(self._transport, node, delimiter="/"):
            if not listed.key.startswith("."):
                return True
        return False

    async def _has_bucket(self, node: Node) -> bool:
        response = await self._transport.request(node, "HEAD", None)
        async with response:
            if response.status == 200:
                return True
            if response.status != 404:
                await raise_for(node, response, self._transport.settings.first_byte_timeout_seconds)
            return False

    async def _drain_state(self, node: Node) -> DrainState | None:
        response = await self._transport.request(node, "HEAD", DRAIN_MARK_KEY)
        async with response:
            if response.status == 200:
                state = response.headers.get(_DRAIN_STATE_HEADER, "")
                drained = state == DrainState.DRAINED.value
                return DrainState.DRAINED if drained else DrainState.DRAINING
            if response.status == 404:
                return None  # taken away since it was listed
            await raise_for(node, response, self._transport.settings.first_byte_timeout_seconds)

    async def mark(self, node: Node, state: DrainState, note: str) -> None:
        await self._put_mark(node, DRAIN_MARK_KEY, note, {_DRAIN_STATE_HEADER: state.value})

    async def unmark(self, node: Node) -> None:
        await self._delete_key(node, DRAIN_MARK_KEY)

    async def mark_migrated(self, node: Node) -> None:
        await self._put_mark(node, MIGRATED_MARK_KEY, "no object under the layout before 2026-12")

    async def mark_ring(self, node: Node, fingerprint: str, *, settled: bool) -> None:
        key = ring_key(fingerprint, settled=settled)
        await self._put_mark(node, key, "")
        await self._remove_rings(node, keep=key)

    async def unmark_ring(self, node: Node) -> None:
        await self._remove_rings(node, keep=None)

    async def _remove_rings(self, node: Node, keep: str | None) -> None:
        stale = [
            listed.key
            async for listed in list_keys(self._transport, node, prefix=RING_MARK_PREFIX)
            if listed.key != keep
        ]
        for key in stale:
            await self._delete_key(node, key)

    async def _put_mark(
        self, node: Node, key: str, note: str, headers: dict[str, str] | None = None
    ) -> None:
        await self._buckets.ensure(node)
        data = note.encode()
        await self._buckets.retrying(
            node,
            lambda: self._uploads.put_bytes(
                node, key, len(data), data, "text/plain", headers=headers, from_client=False
            ),
        )

    async def _delete_key(self, node: Node, key: str) -> None:
        response = await self._transport.request(node, "DELETE", key)
        async with response:
            if response.status not in (200, 204, 404):
                await raise_for(node, response, self._transport.settings.first_byte_timeout_seconds)

    # -- leases -----------------------------------------------------------------------------

    async def claims(self, node: Node, lease: str) -> list[LeaseClaim]:
        found = []
        async for listed in list_keys(self._transport, node, prefix=f"{LEASES_PREFIX}{lease}/"):
            claim = claim_of(listed.key)
            if claim is not None:
                found.append(claim)
        return found

    async def claim(self, node: Node, lease: str, claim: LeaseClaim) -> None:
        await self._put_mark(node, claim_key(lease, claim), "")

    async def drop(self, node: Node, lease: str, claim: LeaseClaim) -> None:
        for held in await self.claims(node, lease):
            if held.version == claim.version:
                await self._delete_key(node, claim_key(lease, held))
