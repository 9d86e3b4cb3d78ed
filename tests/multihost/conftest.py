"""Figures the multi-host tests measure, printed at the end of the run (as the reliability
tests print theirs)."""

import pytest

_FIGURES: dict[str, str] = {}


@pytest.fixture
def figures() -> dict[str, str]:
    return _FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("multi-host figures")
        for name, value in sorted(_FIGURES.items()):
            terminalreporter.write_line(f"{name}: {value}")
