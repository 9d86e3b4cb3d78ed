"""The soak in the test run: about 90 s of load while the fleet changes; zero violations."""

from __future__ import annotations

import os

from tests.reliability.soak import soak


def test_fleet_changes_under_load_lose_nothing_serve_nothing_stale_and_bring_nothing_back(
    figures: dict[str, str],
) -> None:
    """With two worker processes: whichever takes a request, the guarantees are the gateway's."""
    result = soak(float(os.environ.get("SOAK_SECONDS", "75")), workers=2)
    figures["soak, two workers"] = result.summary()
    assert not result.violations, "\n".join(result.violations[:40])
    assert len(result.events) >= 7, result.events
    assert sum(result.requests.values()) > 1000
    assert result.peak_process_rss_mib < 300, result.summary()


def test_with_three_copies_the_same_changes_cost_not_one_request(
    figures: dict[str, str],
) -> None:
    """GATEWAY_REPLICAS=3: a kill, a pause, a drain: zero 503s, and no write excused."""
    result = soak(float(os.environ.get("SOAK_SECONDS_REPLICATED", "60")), replicas=3)
    figures["soak with three copies"] = result.summary()
    assert not result.violations, "\n".join(result.violations[:40])
    assert not result.excused
    assert result.sick_503 == 0
    assert len(result.events) >= 7, result.events
    assert sum(result.requests.values()) > 1000
    assert result.peak_process_rss_mib < 300, result.summary()
