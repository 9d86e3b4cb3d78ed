"""How many copies of each object, and how many must answer: N replicas, write quorum W, read
quorum R, with R + W > N so that every read meets the last acknowledged write."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReplicationPolicy"]


@dataclass(frozen=True, slots=True)
class ReplicationPolicy:
    replicas: int = 1
    write_quorum: int = 1
    read_quorum: int = 1

    def __post_init__(self) -> None:
        n, w, r = self.replicas, self.write_quorum, self.read_quorum
        if n < 1:
            raise ValueError(f"replicas must be at least 1, not {n}")
        if not 1 <= w <= n:
            raise ValueError(f"the write quorum must be between 1 and the replicas ({n}), not {w}")
        if not 1 <= r <= n:
            raise ValueError(f"the read quorum must be between 1 and the replicas ({n}), not {r}")
        if r + w <= n:
            raise ValueError(
                f"read quorum {r} + write quorum {w} must exceed the replicas ({n}), or a read "
                "could miss the last acknowledged write"
            )

    @classmethod
    def of(
        cls, replicas: int, write_quorum: int | None = None, read_quorum: int | None = None
    ) -> ReplicationPolicy:
        """With the usual defaults: a majority writes (W = N // 2 + 1), and R = N - W + 1."""
        w = replicas // 2 + 1 if write_quorum is None else write_quorum
        r = replicas - w + 1 if read_quorum is None else read_quorum
        return cls(replicas, w, r)

    @property
    def single(self) -> bool:
        """One copy per ID (the exercise's default): no quorum to gather."""
        return self.replicas == 1
