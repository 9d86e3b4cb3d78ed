import pytest

from domain.in_flight import InFlightLimits


def test_a_node_takes_requests_up_to_its_cap_and_then_refuses() -> None:
    limits = InFlightLimits(max_per_node=2)
    assert limits.try_enter("a")
    assert limits.try_enter("a")
    assert not limits.try_enter("a")
    assert limits.try_enter("b"), "another node has its own cap"
    limits.leave("a")
    assert limits.in_flight("a") == 1
    assert limits.try_enter("a")


def test_leaving_more_often_than_entering_never_goes_below_zero() -> None:
    limits = InFlightLimits(max_per_node=1)
    limits.leave("a")
    assert limits.in_flight("a") == 0
    assert limits.try_enter("a")


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InFlightLimits(max_per_node=0)
