"""Units of size, defined once."""

from __future__ import annotations

__all__ = ["GiB", "KiB", "MiB"]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
