from domain.circuit_breaker import NodeBreakers


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breakers(clock: FakeClock) -> NodeBreakers:
    return NodeBreakers(failure_threshold=3, cooldown_seconds=5, clock=clock)


def test_a_node_stays_admitted_until_the_threshold_of_consecutive_failures() -> None:
    clock = FakeClock()
    subject = breakers(clock)
    subject.record_failure("a")
    subject.record_failure("a")
    assert subject.admit("a") is None
    subject.record_failure("a")
    assert subject.admit("a") == 5


def test_a_success_resets_the_count_of_failures() -> None:
    subject = breakers(FakeClock())
    subject.record_failure("a")
    subject.record_failure("a")
    subject.record_success("a")
    subject.record_failure("a")
    assert subject.admit("a") is None


def test_an_open_breaker_refuses_with_the_time_left_then_admits_one_probe() -> None:
    clock = FakeClock()
    subject = breakers(clock)
    for _ in range(3):
        subject.record_failure("a")
    clock.now += 2
    assert subject.admit("a") == 3
    clock.now += 3
    assert subject.admit("a") is None  # the probe
    assert subject.admit("a") is not None  # others wait for the probe's verdict


def test_a_successful_probe_closes_the_breaker() -> None:
    clock = FakeClock()
    subject = breakers(clock)
    for _ in range(3):
        subject.record_failure("a")
    clock.now += 5
    assert subject.admit("a") is None
    subject.record_success("a")
    assert subject.admit("a") is None
    assert not subject.state("a").open


def test_a_failed_probe_opens_the_breaker_for_another_cooldown() -> None:
    clock = FakeClock()
    subject = breakers(clock)
    for _ in range(3):
        subject.record_failure("a")
    clock.now += 5
    assert subject.admit("a") is None
    subject.record_failure("a")
    assert subject.admit("a") == 5


def test_a_probe_that_never_reports_stops_blocking_after_a_cooldown() -> None:
    clock = FakeClock()
    subject = breakers(clock)
    for _ in range(3):
        subject.record_failure("a")
    clock.now += 5
    assert subject.admit("a") is None
    clock.now += 5
    assert subject.admit("a") is None


def test_breakers_are_per_node() -> None:
    subject = breakers(FakeClock())
    for _ in range(3):
        subject.record_failure("a")
    assert subject.admit("a") is not None
    assert subject.admit("b") is None
