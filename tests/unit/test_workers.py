"""The worker supervisor, in a process of its own (it installs signal handlers and forks): workers
start, one that dies is replaced, a stop reaches every worker, and workers that cannot start make
it give up rather than fork for ever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from entrypoints.settings import Settings, cores_available

_SUPERVISOR = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from entrypoints.workers import supervise

    folder = Path(sys.argv[1])
    fail = sys.argv[2] == "fail"

    def work(index: int) -> None:
        if fail:
            raise RuntimeError("cannot start")
        (folder / f"{index}-{os.getpid()}").touch()
        while True:
            signal.pause()

    sys.exit(supervise(2, work))
    """
)


def wait_until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet waited for) counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(mode: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-c", _SUPERVISOR, str(tmp_path), mode],
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
            stderr=subprocess.PIPE,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def workers_in(folder: Path) -> list[int]:
    return [int(path.name.split("-")[1]) for path in folder.iterdir()]


def test_a_worker_that_dies_is_replaced_and_a_stop_reaches_every_worker(
    supervisor: Callable[[str], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    process = supervisor("serve")
    wait_until(lambda: len(workers_in(tmp_path)) == 2)
    first, second = workers_in(tmp_path)

    os.kill(first, signal.SIGKILL)
    wait_until(lambda: len(workers_in(tmp_path)) == 3)
    replacement = next(pid for pid in workers_in(tmp_path) if pid not in (first, second))
    assert alive(second)
    assert alive(replacement)
    assert process.poll() is None

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    wait_until(lambda: not alive(second) and not alive(replacement))


def test_workers_that_cannot_start_make_the_supervisor_give_up(
    supervisor: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    process = supervisor("fail")
    assert process.wait(timeout=30) == 1
    assert process.stderr is not None
    assert b"keep failing to start" in process.stderr.read()


def test_zero_workers_means_one_per_core_within_the_containers_cpu_limit(tmp_path: Path) -> None:
    limit = tmp_path / "cpu.max"
    cores = len(os.sched_getaffinity(0))
    limit.write_text("max 100000\n")
    assert cores_available(limit) == cores
    limit.write_text("50000 100000\n")  # half a core: one worker
    assert cores_available(limit) == 1
    limit.write_text(f"{(cores + 8) * 100000} 100000\n")  # a limit above the cores: the cores
    assert cores_available(limit) == cores
    assert cores_available(tmp_path / "absent") == cores
    assert Settings(workers=3).worker_count == 3
    assert Settings(workers=0).worker_count == cores_available()


def test_each_worker_takes_its_share_of_the_gateways_budgets() -> None:
    whole = Settings(workers=4)
    share = whole.per_worker(4)
    # Each keeps room for one part of an upload, whatever the split leaves it.
    assert share.upload_buffer_bytes == max(whole.part_size_bytes, whole.upload_buffer_bytes // 4)
    assert share.upload_spool_bytes * 4 <= whole.upload_spool_bytes
    # Caps that would refuse a busy worker's requests while another had room stay its own.
    assert share.node_max_in_flight == whole.node_max_in_flight
    assert share.max_connections == whole.max_connections
    assert whole.per_worker(1) == whole
    with pytest.raises(ValueError, match="GATEWAY_WORKERS"):
        Settings(workers=-1)
