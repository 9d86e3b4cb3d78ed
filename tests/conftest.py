"""Fixtures shared by the integration and reliability tests: real nodes and a real gateway.

Unit tests use none of them (they have their own in tests/unit/conftest.py).
"""

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The reaper image cannot be pulled on machines without a registry; fixtures clean up themselves.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker
import httpx
import pytest

from tests.integration.support import (
    GatewayServer,
    StorageNode,
    new_run_marker,
    remove_leftover_test_containers,
    start_node,
)

_FIGURES: dict[str, str] = {}
# With the suite spread over processes (pytest-xdist), each writes what it measured here, and the
# process that reports gathers it.
_FIGURES_DIR = "GATEWAY_TEST_FIGURES_DIR"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and _FIGURES_DIR not in os.environ:
        os.environ[_FIGURES_DIR] = tempfile.mkdtemp(prefix="gateway-figures-")


def pytest_sessionfinish(session: pytest.Session) -> None:
    folder = os.environ.get(_FIGURES_DIR)
    worker = getattr(session.config, "workerinput", {}).get("workerid")
    if folder and worker and _FIGURES:
        Path(folder, f"{worker}.json").write_text(json.dumps(_FIGURES))


@pytest.fixture
def figures() -> dict[str, str]:
    """What a reliability or multi-host test measured, printed at the end of the run."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    gathered = dict(_FIGURES)
    folder = os.environ.get(_FIGURES_DIR)
    if folder:
        for measured in sorted(Path(folder).glob("*.json")):
            gathered.update(json.loads(measured.read_text()))
    if gathered:
        terminalreporter.section("figures")
        for name, value in sorted(gathered.items()):
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    # No skip: a missing Docker daemon is a failure of the test run, not a reason to pass.
    client = docker.from_env()
    client.ping()
    remove_leftover_test_containers(client)
    yield client
    client.close()


@pytest.fixture(scope="session")
def run_marker() -> str:
    return new_run_marker()


@pytest.fixture(scope="session")
def nodes(docker_client: docker.DockerClient, run_marker: str) -> Iterator[list[StorageNode]]:
    started: list[StorageNode] = []
    try:
        # Different keys each; the third uses MinIO's legacy variable names.
        for index, legacy in ((1, False), (2, False), (3, True)):
            started.append(start_node(run_marker, index, legacy_key_names=legacy))
        yield started
    finally:
        for node in started:
            node.container.stop()
            # testcontainers keeps a Docker client per container; close its socket too.
            node.container.get_docker_client().client.close()


@pytest.fixture(scope="session")
def gateway(nodes: list[StorageNode], run_marker: str) -> Iterator[GatewayServer]:
    with GatewayServer.for_marker(run_marker) as server:
        yield server


@pytest.fixture
def http(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=60) as client:
        yield client
