"""The reliability suite: faults injected into real nodes, a real Docker daemon, real sockets.

Each test records what it measured in ``figures`` (tests/conftest.py); the figures are printed at
the end of the run (the README's "Reliability" section quotes them). Every loop is bounded in count
and time.
"""

from __future__ import annotations

import resource
from pathlib import Path


def rss_mib() -> float:
    """This process's resident memory: the gateway under test runs in it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_files_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
