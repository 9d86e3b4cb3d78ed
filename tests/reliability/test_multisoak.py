"""The soak with two gateways over one fleet, in the test run: racing writers on shared IDs through
both, a drain through one while the other takes slow uploads, nodes paused; zero violations."""

from __future__ import annotations

import os

import pytest

from tests.reliability.multisoak import multisoak


@pytest.mark.parametrize("replicas", [1, 3], ids=["one-copy", "three-copies"])
def test_two_gateways_lose_nothing_serve_nothing_stale_and_agree_on_every_id(
    replicas: int, figures: dict[str, str]
) -> None:
    """Each gateway with two worker processes: four processes over one fleet."""
    result = multisoak(
        float(os.environ.get("MULTISOAK_SECONDS", "50")), replicas=replicas, workers=2
    )
    figures[f"soak with two gateways of two workers, N={replicas}"] = result.summary()
    assert not result.violations, "\n".join(result.violations[:40])
    assert len(result.events) >= 8, result.events
    assert sum(result.requests.values()) > 1000
    if replicas > 1:
        assert result.sick_503 == 0
    assert result.peak_process_rss_mib < 300, result.summary()
