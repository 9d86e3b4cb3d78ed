"""Units of size, defined once."""

from __future__ import annotations

__all__ = ["SMALL_OBJECT_BYTES", "GiB", "KiB", "MiB"]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# A body up to this size is read whole before it is sent on: sent in one piece, on nodes chosen
# once it has all arrived (a socket buffer's worth: a small write costs no streaming machinery).
SMALL_OBJECT_BYTES = 64 * KiB
