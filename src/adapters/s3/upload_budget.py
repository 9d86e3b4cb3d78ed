"""Where the parts of multipart uploads are held while they fill: memory while a process-wide budget
has room, else a temporary file, so that no client can make another client's upload wait.

Uploads of unknown length (or over 5 GiB) go up in parts of at least 5 MiB, and a part must be
whole before it can be sent. Reserving a whole part's worth of memory up front let three clients
that paused after a few KiB hold 15 of the 16 MiB budget, and every other chunked upload waited for
them. Now the budget is charged for the bytes actually held, chunk by chunk, and never waited for:
when it has no room, the part moves to a temporary file and fills there (what nginx does with
request bodies beyond its buffers). Memory stays bounded by the budget; disk by a second budget,
beyond which an upload is refused at once (503 with Retry-After) rather than made to wait.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from typing import IO

from domain.errors import UploadCapacityExhausted
from domain.sizes import KiB

__all__ = ["ByteBudget", "PartBuffer", "PartSpool"]

# A part goes out in slices: the writer then waits for the socket between them instead of queueing
# megabytes at once, and a file is read a slice at a time.
SLICE_BYTES = 256 * KiB


class ByteBudget:
    """Bytes that may be held at once, taken as they are held and given back after; never waited
    for. Requests share one event loop, so plain counters suffice."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError("capacity_bytes must not be negative")
        self._capacity = capacity_bytes
        self._available = capacity_bytes

    @property
    def available_bytes(self) -> int:
        return self._available

    def try_take(self, size: int) -> bool:
        if size > self._available:
            return False
        self._available -= size
        return True

    def give_back(self, size: int) -> None:
        self._available = min(self._capacity, self._available + size)


class PartSpool:
    """Makes the buffers of multipart parts, all drawing on one memory and one disk budget."""

    def __init__(self, memory: ByteBudget, disk: ByteBudget, directory: str = "") -> None:
        """``directory``: where temporary files go; empty for the system's (TMPDIR, else /tmp)."""
        self.memory = memory
        self.disk = disk
        self._directory = directory

    def new_part(self) -> PartBuffer:
        return PartBuffer(self)

    def open_file(self) -> IO[bytes]:
        # Unlinked at once (O_TMPFILE where the file system has it): nothing is left behind, even
        # by a process that is killed.
        return tempfile.TemporaryFile(dir=self._directory or None)


class PartBuffer:
    """One part as it fills: in memory while the memory budget has room, then in a temporary file.

    ``close`` gives back what it held; it must be awaited once the part was sent (or given up).
    """

    def __init__(self, spool: PartSpool) -> None:
        self._spool = spool
        self._memory = bytearray()
        self._file: IO[bytes] | None = None
        self.size = 0
        # Sent with the part (Content-MD5): the node refuses a part damaged on the way.
        self._md5 = hashlib.md5(usedforsecurity=False)

    @property
    def in_memory(self) -> bool:
        return self._file is None

    async def append(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._md5.update(chunk)
        if self._file is None and self._spool.memory.try_take(len(chunk)):
            self._memory += chunk
        else:
            if not self._spool.disk.try_take(len(chunk)):
                raise UploadCapacityExhausted(
                    "the gateway holds as many upload parts as its memory and disk budgets allow"
                )
            if self._file is None:
                await self._spill()
            file = self._file
            assert file is not None
            await asyncio.to_thread(file.write, chunk)
        self.size += len(chunk)

    async def _spill(self) -> None:
        """Move what memory holds of this part to a new temporary file."""
        held = len(self._memory)
        if held and not self._spool.disk.try_take(held):
            raise UploadCapacityExhausted(
                "the gateway holds as many upload parts as its memory and disk budgets allow"
            )
        self._file = await asyncio.to_thread(self._spool.open_file)
        if held:
            await asyncio.to_thread(self._file.write, self._memory)
            self._memory = bytearray()
            self._spool.memory.give_back(held)

    def md5(self) -> str:
        """The part's checksum as Content-MD5 carries it (base64)."""
        return base64.b64encode(self._md5.digest()).decode()

    def whole(self) -> bytes | None:
        """The part as one bytes object when it is small and in memory (sent in one write)."""
        if self._file is None and self.size <= SLICE_BYTES:
            return bytes(self._memory)
        return None

    async def slices(self) -> AsyncIterator[bytes]:
        """The part from its start, a slice at a time; several readers may read it at once."""
        if self._file is None:
            view = memoryview(self._memory)
            for start in range(0, self.size, SLICE_BYTES):
                yield view[start : start + SLICE_BYTES]  # type: ignore[misc]
            return
        await asyncio.to_thread(self._file.flush)
        descriptor = self._file.fileno()
        for start in range(0, self.size, SLICE_BYTES):
            yield await asyncio.to_thread(os.pread, descriptor, SLICE_BYTES, start)

    async def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            self._spool.disk.give_back(self.size)
            await asyncio.to_thread(file.close)
        else:
            self._spool.memory.give_back(len(self._memory))
            self._memory = bytearray()
        self.size = 0
