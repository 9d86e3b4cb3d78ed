"""Real storage nodes and a real gateway for integration tests.

Nodes are containers of ``MINIO_IMAGE`` (default: a pinned MinIO release; CI sets the
MinIO-compatible stand-in), or of ``RUSTFS_IMAGE`` for a RustFS-keyed node (default: a pinned
RustFS release; CI sets the stand-in, which also honours RustFS's key names), named
``amazin-object-storage-node-<run>-<n>``. The gateway under test
runs in this process on a loopback port and is configured with the run-specific marker, so
leftovers of earlier runs or a compose stack never join its ring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import uvicorn
from dependency_injector import providers
from minio import Minio
from testcontainers.core.container import DockerContainer

from entrypoints.container import Container
from entrypoints.http.app import create_app
from entrypoints.main import server_options
from entrypoints.settings import Settings

DEFAULT_MINIO_IMAGE = "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
MINIO_IMAGE = os.environ.get("MINIO_IMAGE") or DEFAULT_MINIO_IMAGE
DEFAULT_RUSTFS_IMAGE = "rustfs/rustfs:1.0.0-alpha.99"
RUSTFS_IMAGE = os.environ.get("RUSTFS_IMAGE") or DEFAULT_RUSTFS_IMAGE
# The Docker socket proxy of the compose and stack files (CI sets a local stand-in).
DEFAULT_SOCKET_PROXY_IMAGE = "wollomatic/socket-proxy:1.10.0"
SOCKET_PROXY_IMAGE = os.environ.get("SOCKET_PROXY_IMAGE") or DEFAULT_SOCKET_PROXY_IMAGE
# The environment variable names each node server reads its key pair from.
ROOT_KEY_NAMES = ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
LEGACY_KEY_NAMES = ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")
RUSTFS_KEY_NAMES = ("RUSTFS_ACCESS_KEY", "RUSTFS_SECRET_KEY")
TEST_LABEL = "amazin-gateway-tests"
# Every test container carries TEST_LABEL with the ID of the test process that started it, so that
# a run removes what dead runs left and never the containers of a run still going beside it.
TEST_LABELS = {TEST_LABEL: str(os.getpid())}
# A container whose label names no process (older labels said "1") is a leftover after this long.
_UNOWNED_LEFTOVER_SECONDS = 3 * 3600
OBJECT_GATEWAY = Path(sys.executable).with_name("object-gateway")
BUCKET = "objects"
VERSIONS_PREFIX = "by-id/"


def new_run_marker() -> str:
    return f"amazin-object-storage-node-{uuid.uuid4().hex[:8]}"


def remove_leftover_test_containers(client: docker.DockerClient) -> None:
    """Containers of earlier test runs that died before their own cleanup.

    Not those of a test run still going on this machine (several may share one daemon): their
    process is alive. A container removed meanwhile by its own run is left to it.
    """
    for container in client.containers.list(all=True, filters={"label": TEST_LABEL}):
        if _owned_by_a_live_run(container):
            continue
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True, v=True)


def _owned_by_a_live_run(container: docker.models.containers.Container) -> bool:
    owner = container.labels.get(TEST_LABEL, "")
    if owner.isdigit() and int(owner) > 1:
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    created = datetime.datetime.fromisoformat(container.attrs["Created"][:26].rstrip("Z"))
    age = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - created
    return age.total_seconds() < _UNOWNED_LEFTOVER_SECONDS


@dataclass
class StorageNode:
    name: str
    access_key: str
    secret_key: str
    legacy_key_names: bool
    container: DockerContainer

    @property
    def wrapped(self):  # type: ignore[no-untyped-def]
        return self.container.get_wrapped_container()

    def ip_address(self) -> str:
        self.wrapped.reload()
        networks = self.wrapped.attrs["NetworkSettings"]["Networks"]
        return next(n["IPAddress"] for _, n in sorted(networks.items()) if n["IPAddress"])

    def client(self) -> Minio:
        return Minio(
            f"{self.ip_address()}:9000",
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
        )

    def bucket_keys(self) -> list[str]:
        """Every key the node's bucket holds, in order (as an operator's console shows them)."""
        client = self.client()
        if not client.bucket_exists(BUCKET):
            return []
        return [obj.object_name or "" for obj in client.list_objects(BUCKET, recursive=True)]

    def versions(self) -> dict[str, list[str]]:
        """The node's versions by ID: each ``<version>.<kind>`` (and ``legacy`` for an object
        kept under its ID's own key, the layout before versions had keys)."""
        held: dict[str, list[str]] = {}
        for key in self.bucket_keys():
            if key.startswith(VERSIONS_PREFIX):
                object_id, _, name = key[len(VERSIONS_PREFIX) :].rpartition("/")
                held.setdefault(object_id, []).append(name)
            elif not key.startswith("."):
                held.setdefault(key, []).append("legacy")
        return held

    def object_names(self) -> set[str]:
        """The IDs the node holds a committed version of (a tombstone too)."""
        return {
            object_id
            for object_id, names in self.versions().items()
            if any(not name.endswith(".pending") for name in names)
        }

    def newest(self, object_id: str) -> bytes | None:
        """The bytes of the node's newest version of the ID (None: none, or a tombstone)."""
        names = sorted(n for n in self.versions().get(object_id, []) if not n.endswith(".pending"))
        if not names or names[-1].endswith(".deleted"):
            return None
        key = object_id if names[-1] == "legacy" else f"{VERSIONS_PREFIX}{object_id}/{names[-1]}"
        response = self.client().get_object(BUCKET, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def lose_bucket(self) -> None:
        """The bucket and all it held gone, as after the node is recreated on an empty volume."""
        client = self.client()
        for key in self.bucket_keys():
            client.remove_object(BUCKET, key)
        client.remove_bucket(BUCKET)

    def put_version(self, object_id: str, data: bytes, version: str, *, kind: str = "data") -> None:
        """Place a version directly, as a gateway would have written it."""
        client = self.client()
        if not client.bucket_exists(BUCKET):
            client.make_bucket(BUCKET)
        key = f"{VERSIONS_PREFIX}{object_id}/{version}.{kind}"
        client.put_object(BUCKET, key, io.BytesIO(data), len(data))

    def stop(self) -> None:
        self.wrapped.stop(timeout=2)

    def start(self) -> None:
        self.wrapped.start()
        wait_until_ready(self)


@contextlib.contextmanager
def frozen(node: StorageNode) -> Iterator[None]:
    """The node's process stops answering (SIGSTOP) while Docker still reports it running."""
    node.wrapped.reload()
    pid = node.wrapped.attrs["State"]["Pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def start_node(marker: str, index: int, legacy_key_names: bool = False) -> StorageNode:
    """A MinIO node keyed by its root pair, or by the legacy pair."""
    names = LEGACY_KEY_NAMES if legacy_key_names else ROOT_KEY_NAMES
    return _start(marker, index, MINIO_IMAGE, names, command="server /data")


def start_rustfs_node(marker: str, index: int) -> StorageNode:
    """A RustFS node, keyed by RustFS's own variable names (its image's command serves /data)."""
    return _start(marker, index, RUSTFS_IMAGE, RUSTFS_KEY_NAMES, command=None)


def _start(
    marker: str, index: int, image: str, key_names: tuple[str, str], command: str | None
) -> StorageNode:
    access_key, secret_key = f"user{index}key", f"secret{index}-{uuid.uuid4().hex[:12]}"
    name = f"{marker}-{index}"
    container = (
        DockerContainer(image)
        .with_name(name)
        .with_env(key_names[0], access_key)
        .with_env(key_names[1], secret_key)
        .with_kwargs(labels=TEST_LABELS)
    )
    if command is not None:
        container = container.with_command(command)
    container.start()
    node = StorageNode(name, access_key, secret_key, key_names == LEGACY_KEY_NAMES, container)
    wait_until_ready(node)
    return node


def wait_until_ready(node: StorageNode, timeout_seconds: float = 30) -> None:
    def answers() -> bool:
        try:
            node.client().list_buckets()
        except Exception:
            return False
        return True

    wait_for(answers, timeout_seconds, f"node {node.name} to answer")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    condition: Callable[[], bool],
    timeout_seconds: float,
    what: str,
    ignoring: tuple[type[Exception], ...] = (),
) -> None:
    """Poll ``condition`` until it holds; ``ignoring`` exceptions count as "not yet"."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except ignoring:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_seconds} s waiting for {what}")


class GatewayServer:
    """The real app served by uvicorn on a free loopback port, in a background thread."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self._socket = _loopback_listener()
        self.port = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        # The admin listener (rebalance, drain), on a port of its own as in production.
        self._admin_socket = _loopback_listener()
        self.admin_port = self._admin_socket.getsockname()[1]
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        settings = dataclasses.replace(container.settings(), admin_port=self.admin_port)
        container.settings.override(providers.Object(settings))
        config = uvicorn.Config(
            create_app(container),
            log_level="warning",
            lifespan="on",
            **server_options(settings),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket, self._admin_socket]},
            daemon=True,
        )

    @classmethod
    def for_marker(cls, marker: str, **overrides: object) -> GatewayServer:
        container = Container()
        settings = Settings(node_name_marker=marker, **overrides)  # type: ignore[arg-type]
        container.settings.override(providers.Object(settings))
        return cls(container)

    def use_docker_at(self, base_url: str) -> None:
        self.container.docker_client.override(
            providers.Factory(docker.DockerClient, base_url=base_url, timeout=2)
        )

    def __enter__(self) -> GatewayServer:
        self._thread.start()
        wait_for(lambda: self._server.started, 10, "the gateway to start")
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
        self._admin_socket.close()

    def command(self, *arguments: str, timeout: float = 300) -> tuple[int, list[dict[str, object]]]:
        """Run ``object-gateway <arguments>`` against this gateway; its status and JSON lines."""
        done = subprocess.run(
            [str(OBJECT_GATEWAY), *arguments],
            env=dict(os.environ, GATEWAY_ADMIN_URL=self.admin_url),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        assert lines, done.stderr
        return done.returncode, lines


class GatewayProcess:
    """``object-gateway`` as operators run it, on loopback ports of its own."""

    def __init__(
        self, marker: str, workdir: Path, replicas: int = 1, workers: int = 1, **settings: str
    ) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        env = dict(
            os.environ,
            GATEWAY_HOST="127.0.0.1",
            GATEWAY_PORT=str(self.port),
            GATEWAY_ADMIN_PORT=str(self.admin_port),
            GATEWAY_NODE_NAME_MARKER=marker,
            GATEWAY_DRAIN_CHECK_SECONDS="1",
            GATEWAY_REPLICAS=str(replicas),
            GATEWAY_WORKERS=str(workers),
            **settings,
        )
        self.log = (workdir / "gateway.log").open("wb")
        self.process = subprocess.Popen([str(OBJECT_GATEWAY)], env=env, stderr=self.log)
        wait_for(
            lambda: urllib.request.urlopen(f"{self.url}/health/ready", timeout=2).status == 200,
            30,
            "the gateway",
            ignoring=(OSError,),
        )

    def workers(self) -> list[int]:
        """The worker processes' IDs (none: the gateway is one process)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def rss_by_process_mib(self) -> list[float]:
        sizes = []
        for pid in [self.process.pid, *self.workers()]:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:  # a worker replaced meanwhile
                continue
            line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
            sizes.append(int(line.split()[1]) / 1024)
        return sizes

    def command(self, *arguments: str, timeout: float = 600) -> tuple[int, list[dict[str, object]]]:
        done = subprocess.run(
            [str(OBJECT_GATEWAY), *arguments],
            env=dict(os.environ, GATEWAY_ADMIN_URL=self.admin_url, GATEWAY_DRAIN_CHECK_SECONDS="1"),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        return done.returncode, lines

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _loopback_listener() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    return listener


# Docker API requests are small, so a request line never straddles two reads here.
_REQUEST_LINE = re.compile(rb"^([A-Z]+ \S+) HTTP/1\.1\r$", re.MULTILINE)


class DockerSocketProxy:
    """A TCP front for the Docker socket that counts the API requests through it and can be cut.

    Lets a test make the daemon unreachable for one gateway (and only for it) after start-up, and
    prove that requests to the gateway cause no requests to the daemon.
    """

    def __init__(self, socket_path: str = "/var/run/docker.sock") -> None:
        self._socket_path = socket_path
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.base_url = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self.request_lines: list[bytes] = []
        self._cut = False
        # When set, a request for the events stream is taken and never answered, as by a daemon
        # that hangs or a proxy that buffers streamed answers; other requests are answered.
        self.silence_events = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """The daemon becomes unreachable: new connections are dropped, open ones (events) break."""
        self._cut = True
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._connections.clear()

    def restore(self) -> None:
        """The daemon is back."""
        self._cut = False

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self._socket_path)
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client:
                    lines = _REQUEST_LINE.findall(data)
                    with self._lock:
                        self.request_lines += lines
                    if self.silence_events and any(b"/events" in line for line in lines):
                        return  # the connection stays open, and nothing ever comes back
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
