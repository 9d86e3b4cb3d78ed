"""A lease on a job that must not overlap another of its kind, whichever gateway runs it: claims
written on the nodes, the oldest live claim holding the lease.

Nodes cannot compare-and-swap, so a claim cannot be taken atomically. Instead each claimant writes
a claim stamped with a version (its time of asking), waits longer than any claim may take to be
written, and reads every claim back: the oldest claim that has not expired holds the lease, and
the others withdraw. A claim whose own writing took longer than that wait withdraws too, so that
a claim older than a winner's can never appear after the winner looked. A holder renews its claim
well before it expires; one that stops (killed, frozen) loses it at expiry.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.versions import Version

__all__ = ["LeaseClaim", "holder_of"]


@dataclass(frozen=True, slots=True, order=True)
class LeaseClaim:
    """A claim: who asked (its version: when, by which gateway process) and until when it holds
    unless renewed (wall-clock nanoseconds)."""

    version: Version
    expires_ns: int

    def live(self, now_ns: int) -> bool:
        return self.expires_ns > now_ns


def holder_of(claims: list[LeaseClaim], now_ns: int) -> LeaseClaim | None:
    """The claim that holds the lease: the oldest of the live ones (renewals of one claim count
    by their latest expiry)."""
    latest: dict[Version, int] = {}
    for claim in claims:
        latest[claim.version] = max(latest.get(claim.version, 0), claim.expires_ns)
    live = [version for version, expires in latest.items() if expires > now_ns]
    if not live:
        return None
    oldest = min(live)
    return LeaseClaim(oldest, latest[oldest])
