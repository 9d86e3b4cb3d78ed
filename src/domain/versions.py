"""Versions the gateway stamps on every write, so that copies of an ID are ordered by when the
write was made, never by a storage node's clock or by which copy happens to be read first.

A version is (wall-clock nanoseconds, writer, counter): the writer is random per gateway process
and the counter counts its writes, so two versions are never equal, even from two gateways in the
same nanosecond. Its text sorts as the version does. Each gateway's clock never runs backwards and
moves past every version it reads (a hybrid logical clock), so a gateway never stamps a write older
than one it has seen. Between gateways, writes to one ID are ordered by their hosts' clocks: keep
them in step (NTP does, to milliseconds), as Swift's proxies and Cassandra's coordinators need.

Objects written before versions existed carry none: they take the version of their Last-Modified
in whole seconds, by no writer (``Version.of_unversioned``).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Version", "VersionClock"]

_TEXT = re.compile(r"(\d{20})-([0-9a-f]{16})-(\d{12})")

_NO_WRITER = "0" * 16


@dataclass(frozen=True, slots=True, order=True)
class Version:
    timestamp_ns: int
    writer: str
    counter: int

    def __str__(self) -> str:
        return f"{self.timestamp_ns:020d}-{self.writer}-{self.counter:012d}"

    @classmethod
    def parse(cls, text: str) -> Version | None:
        """The version written as ``text``; None when it is not one (a foreign or damaged value)."""
        match = _TEXT.fullmatch(text.strip())
        if match is None:
            return None
        timestamp, writer, counter = match.groups()
        return cls(int(timestamp), writer, int(counter))

    @property
    def seconds(self) -> float:
        return self.timestamp_ns / 1e9

    @classmethod
    def of_unversioned(cls, last_modified: datetime | None) -> Version:
        """The version a copy of an object written before versions takes (a copy keeps the
        version of what it copies): its Last-Modified in whole seconds, by no writer."""
        seconds = int(last_modified.timestamp()) if last_modified is not None else 0
        return cls(seconds * 1_000_000_000, _NO_WRITER, 0)


class VersionClock:
    """Stamps this gateway's writes: strictly increasing, and past every version it has seen."""

    def __init__(self, clock: Callable[[], int] = time.time_ns, writer: str | None = None) -> None:
        self._clock = clock
        self.writer = writer or secrets.token_hex(8)
        self._last_ns = 0
        self._counter = 0

    def next(self) -> Version:
        now = max(self._clock(), self._last_ns + 1)
        self._last_ns = now
        self._counter += 1
        return Version(now, self.writer, self._counter)

    def observe(self, version: Version | None) -> None:
        """A version read from a node: the next write is stamped later than it."""
        if version is not None and version.timestamp_ns > self._last_ns:
            self._last_ns = version.timestamp_ns
