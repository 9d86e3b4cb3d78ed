from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from application.reads import DEFAULT_FALLBACK_NODES
from application.rebalance import DEFAULT_TOMBSTONE_GRACE_SECONDS
from domain.hash_ring import DEFAULT_VIRTUAL_NODES
from domain.replication import ReplicationPolicy
from domain.sizes import GiB, KiB, MiB

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "GATEWAY_"
DISCOVERY_KINDS = ("docker", "swarm")
NODE_SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the gateway. Each field is read from ``GATEWAY_<FIELD NAME IN CAPITALS>``.

    The Docker daemon itself is found the way the docker SDK always finds it (``DOCKER_HOST``, else
    ``/var/run/docker.sock``).
    """

    host: str = "0.0.0.0"  # noqa: S104 - a gateway in a container must listen on every interface
    port: int = 3000
    # Worker processes serving the port (0: one per core this process may use: its CPU affinity,
    # and its container's CPU limit). Each is a whole gateway; the budgets and caps below are the
    # gateway's, split between them.
    workers: int = 0
    # The admin API (rebalance, drain): its own listener, on loopback by default, so that only a
    # process beside the gateway (``docker compose exec gateway object-gateway ...``) reaches it.
    # 0 turns it off.
    admin_host: str = "127.0.0.1"
    admin_port: int = 3001
    # Where the object-gateway commands find that API; empty: http://127.0.0.1:<admin_port>.
    admin_url: str = ""
    log_level: str = "INFO"
    # Log lines are written in batches at most this late (warnings and errors at once); 0 writes
    # each line as it comes. nginx's access_log buffer/flush, for the same reason: a system call
    # per request.
    log_flush_seconds: float = 0.5
    # Where nodes are found: "docker" (this daemon's containers) or "swarm" (a swarm's services,
    # from a manager).
    discovery: str = "docker"
    # Containers (or swarm services) whose name contains this are storage nodes.
    node_name_marker: str = "amazin-object-storage-node"
    # Under swarm: how often the task listing is compared (other hosts' task changes are not in
    # this daemon's events).
    swarm_task_poll_seconds: float = 2.0
    node_port: int = 9000
    # How the gateway speaks to every node of the fleet: "http", or "https" (TLS, each node's
    # certificate chain checked against node_ca_file, else against the system's CAs).
    node_scheme: str = "http"
    # A PEM file of the CA(s) that sign the nodes' certificates; empty: the system's trust store.
    node_ca_file: str = ""
    bucket: str = "objects"
    # Docker events keep the fleet current; a full re-listing also runs after this much quiet.
    discovery_resync_seconds: float = 30.0
    # Readiness fails when discovery has not succeeded for this long (the gateway keeps serving).
    discovery_stale_after_seconds: float = 60.0
    docker_timeout_seconds: float = 5.0
    virtual_nodes: int = DEFAULT_VIRTUAL_NODES
    # Nodes after the owner that reads (and deletes) also look on: where objects sit until a
    # rebalance after membership changed (see DEFAULT_FALLBACK_NODES).
    read_fallback_nodes: int = DEFAULT_FALLBACK_NODES
    # Copies of each object (N), and how many must take a write (W, default N // 2 + 1) or answer
    # a read (R, default N - W + 1); R + W must exceed N. One copy is the exercise's default.
    replicas: int = 1
    write_quorum: int | None = None
    read_quorum: int | None = None
    # How often every gateway reads the nodes' drain marks (a drain waits until all must have).
    drain_check_seconds: float = 2.0
    # A tombstone is removed by a rebalance once it is alone and this old (see the README).
    tombstone_grace_seconds: float = DEFAULT_TOMBSTONE_GRACE_SECONDS
    # The longest a write may take, from its request to its last byte: one still coming later is
    # refused (408). Less than the tombstone grace, so that no write older than a delete can land
    # after the delete's tombstone was removed.
    max_write_seconds: float = 12 * 3600.0
    node_connect_timeout_seconds: float = 1.0
    # From a request (or the end of an upload's body) to the node's first byte of its answer.
    node_first_byte_timeout_seconds: float = 5.0
    # The longest a streaming body may go without the node sending or accepting a byte.
    node_idle_timeout_seconds: float = 30.0
    # Requests that may wait for one node's answer at once; beyond it, its requests get 503 at once.
    node_max_in_flight: int = 64
    # Consecutive connection failures that make a node "rest": its IDs then fail at once (503) ...
    breaker_failure_threshold: int = 3
    # ... for this long, after which one request probes it again.
    breaker_cooldown_seconds: float = 5.0
    # Memory that multipart parts (uploads of unknown length) may hold together; beyond it, parts
    # fill temporary files in upload_spool_dir, up to upload_spool_bytes (then 503 at once).
    upload_buffer_bytes: int = 16 * MiB
    upload_spool_bytes: int = GiB
    # Where those files go; empty: the system's temporary directory (TMPDIR, else /tmp).
    upload_spool_dir: str = ""
    part_size_bytes: int = 5 * MiB
    download_chunk_bytes: int = 256 * KiB
    # Largest accepted PUT body; unset means unlimited.
    max_body_bytes: int | None = None
    # The request line and headers together; beyond it, 431 (nginx: 4 buffers of 8 KiB).
    max_request_head_bytes: int = 32 * KiB
    # From a connection's first byte (or its opening) to the end of the request head; else 408.
    request_head_timeout_seconds: float = 20.0
    # An idle kept-alive connection is closed after this long.
    keep_alive_timeout_seconds: float = 15.0
    # Connections open at once; beyond it, 503 at once (the file limit is raised to fit).
    max_connections: int = 1000
    # How long a client may leave an upload without sending, or a download without reading.
    body_read_timeout_seconds: float = 60.0
    body_send_timeout_seconds: float = 60.0
    # Auth (README: Security): empty, the API is open, as the exercise asks; a path turns auth on:
    # the tokens (as hashes) and signing keys in that file, which the object-gateway token, sign
    # and signing-key commands write. A file that does not exist yet holds no token: every
    # request but GET /health/live is then refused.
    auth_tokens_file: str = ""
    # How often the gateway looks whether that file changed (a stat; a read only on change).
    auth_reload_seconds: float = 1.0
    # After the grace period, an upload must arrive (and a download be read) at least this fast on
    # average, over the time spent waiting for the client; slower is cut off (uploads: 408). As
    # Kestrel's MinRequestBodyDataRate and MinResponseDataRate: 240 bytes/s after 5 s. 0: none.
    min_data_rate_bytes_per_second: int = 240
    min_data_rate_grace_seconds: float = 5.0
    # The chunk extensions (and other framing beyond 16 bytes per chunk) a chunked body may carry in
    # all; beyond it, 400. They are no data, yet the gateway reads and parses every byte of them.
    max_chunk_extension_bytes: int = 16 * KiB

    def __post_init__(self) -> None:
        try:
            self.replication  # noqa: B018 - checked at start-up, with a clear message
        except ValueError as exc:
            raise ValueError(
                f"{env_variable('replicas')}={self.replicas}, "
                f"{env_variable('write_quorum')}={self.write_quorum}, "
                f"{env_variable('read_quorum')}={self.read_quorum}: {exc}"
            ) from None
        if not 0 < self.max_write_seconds < self.tombstone_grace_seconds:
            raise ValueError(
                f"{env_variable('max_write_seconds')}={self.max_write_seconds:g} must be positive "
                f"and less than {env_variable('tombstone_grace_seconds')}="
                f"{self.tombstone_grace_seconds:g}"
            )
        if self.auth_reload_seconds <= 0:
            raise ValueError(f"{env_variable('auth_reload_seconds')} must be above 0")
        if self.node_scheme not in NODE_SCHEMES:
            raise ValueError(
                f"{env_variable('node_scheme')}={self.node_scheme!r} is not one of "
                f"{', '.join(NODE_SCHEMES)}"
            )
        if self.node_ca_file and self.node_scheme != "https":
            raise ValueError(
                f"{env_variable('node_ca_file')} is set, but {env_variable('node_scheme')} is "
                f"{self.node_scheme!r}: set it to https to speak TLS to the nodes"
            )
        if self.node_ca_file and not os.path.isfile(self.node_ca_file):
            raise ValueError(
                f"{env_variable('node_ca_file')}={self.node_ca_file!r} is not a readable file"
            )
        if self.workers < 0:
            raise ValueError(f"{env_variable('workers')} must be 0 (one per core) or more")
        if self.discovery not in DISCOVERY_KINDS:
            raise ValueError(
                f"{env_variable('discovery')}={self.discovery!r} is not one of "
                f"{', '.join(DISCOVERY_KINDS)}"
            )

    @property
    def replication(self) -> ReplicationPolicy:
        return ReplicationPolicy.of(self.replicas, self.write_quorum, self.read_quorum)

    @property
    def replicated(self) -> bool:
        return self.replicas > 1

    @property
    def worker_count(self) -> int:
        """How many worker processes serve: ``workers``, or one per core it may run on."""
        return self.workers if self.workers > 0 else cores_available()

    def per_worker(self, count: int) -> Settings:
        """These settings for one of ``count`` workers: the memory and disk budgets split
        between them, so that together they keep the gateway's.

        The caps of connections and of requests waiting for a node stay each worker's own (as
        nginx's ``worker_connections``): the kernel does not spread connections evenly, and a
        split cap would refuse a busy worker's requests while another had room."""
        if count <= 1:
            return self
        return dataclasses.replace(
            self,
            upload_buffer_bytes=max(self.part_size_bytes, self.upload_buffer_bytes // count),
            upload_spool_bytes=self.upload_spool_bytes // count,
        )

    @property
    def drain_ack_window_seconds(self) -> float:
        """How long after a mark read a write on that node may still be acknowledged on its
        strength (a drain waits this long after marking before its last look): every gateway
        reads the marks every drain_check_seconds, with room for a slow read. The same on every
        gateway, as drain_check_seconds must be."""
        return 2 * self.drain_check_seconds + 2

    @property
    def drain_propagation_seconds(self) -> float:
        """How long until every gateway must have read a new mark: one that read the marks just
        before it was written sees it at its next read, which may itself take a second."""
        return 2 * self.drain_check_seconds + 1

    @property
    def auth_mode(self) -> str:
        """``off`` (the default: no file named) or ``on``."""
        return "on" if self.auth_tokens_file else "off"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        types = typing.get_type_hints(cls)
        values: dict[str, object] = {}
        for field in fields(cls):
            variable = env_variable(field.name)
            raw = environ.get(variable, "").strip()
            if raw:
                values[field.name] = _parse(variable, raw, types[field.name])
        return cls(**values)  # type: ignore[arg-type]


# cgroup v2: "<quota> <period>" in microseconds, or "max <period>" without a limit.
_CPU_LIMIT_FILE = Path("/sys/fs/cgroup/cpu.max")


def cores_available(cpu_limit_file: Path = _CPU_LIMIT_FILE) -> int:
    """The cores this process may use: those it may run on, fewer if its container's CPU limit
    (``docker run --cpus``, a service's ``cpus:``) allows fewer; rounded up."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_limit_file.read_text().split()
        limit = math.ceil(int(quota) / int(period))
    except (OSError, ValueError, ZeroDivisionError):  # no cgroup v2 file, or "max": no limit
        return cores
    return max(1, min(cores, limit))


def env_variable(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _parse(variable: str, raw: str, wanted: object) -> object:
    target = int if wanted in (int, int | None) else float if wanted is float else str
    try:
        return target(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r} is not a valid {target.__name__}") from None
