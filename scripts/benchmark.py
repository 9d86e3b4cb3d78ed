#!/usr/bin/env python3
"""Measures the gateway against nginx's consistent-hash proxy and a node itself, in one run.

Starts three nodes (MINIO_IMAGE, default the pinned MinIO release) that also accept anonymous
requests (nginx cannot sign: the stand-in gets STANDIN_ANONYMOUS=1, MinIO a public bucket policy),
then prints:
  (a) throughput with wrk through the gateway (its default settings, access log on), through nginx
      (one worker, `hash $object_id consistent`, keepalive 64, no request buffering, no access log)
      over the same three nodes, and directly to one node, and through a second gateway with
      GATEWAY_REPLICAS=3 (N=3, side by side with N=1), and through a third gateway with tracing on
      (every request sampled, spans exported over OTLP/HTTP to a sink in this process; N=1 has
      tracing off, as shipped): 1 KiB PUT of new IDs, 1 KiB PUT over
      existing IDs and 1 KiB GET at 32 connections, 16 MiB PUT (new and existing IDs) and GET at 8
      connections; the sides take turns, each run is repeated, the median is quoted with
      gateway/nginx and gateway/direct;
  (b) the gateway's peak RSS (sampled from /proc) while 16 clients upload 128 MiB each with a
      Content-Length, each abandoning a send that stalls for 5 s (urllib3's connect timeout, which
      it also applies while sending), and while 8 clients upload 256 MiB each chunked (curl); then
      the 16 uploads of 128 MiB again with GATEWAY_REPLICAS=3 (each body streamed to 3 nodes);
  (c) with one node frozen (SIGSTOP) and 40 clients reading its IDs: the p99 and max of round trips
      (PUT then GET) to IDs on the other nodes, and how the frozen node's requests were answered.
All traffic goes to loopback or to the containers this script started; every loop is bounded.

  (d) with --rebalance-objects N: N objects of 100 bytes on the three nodes, a fourth node added,
      and `object-gateway rebalance` timed (moves/s) with the gateway's peak RSS; then again with
      nothing left to move (objects looked at per second).
  With --baseline REF, (a) also runs the gateway of that commit (its src/, by this Python), N=1, as
  a side of its own: the cost of what changed since, measured in the same run.
Usage: .venv/bin/python scripts/benchmark.py [--runs 3] [--seconds 5] [--workload LABEL]
       [--baseline REF] [--skip-throughput] [--skip-memory] [--skip-frozen] [--rebalance-objects N]
Needs: a Docker daemon, wrk, curl and nginx (Debian's nginx-light) on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import urllib3
from minio import Minio

MINIO_IMAGE = os.environ.get("MINIO_IMAGE") or "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
LABEL = "amazin-gateway-tests"
BUCKET = "objects"
KiB, MiB = 1024, 1024 * 1024
GATEWAY = Path(sys.executable).with_name("object-gateway")
# The gateway's default worker count here (GATEWAY_WORKERS=0): one per core.
CORES = len(os.sched_getaffinity(0))

WRK_SCRIPT = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local body = %(body)s
local fresh = %(fresh)s
local counter = 0
-- Each wrk thread starts at another place in the list, so they rarely write one key at once.
local threads_set_up = 0
setup = function(thread)
  thread:set("offset", threads_set_up * 7919)
  thread:set("thread_id", threads_set_up)
  threads_set_up = threads_set_up + 1
end
init = function(args) counter = offset end
request = function()
  counter = counter + 1
  if fresh then
    -- A new ID every time: PUTs that create objects, never replace them.
    return wrk.format("%(method)s", paths[1] .. "t" .. thread_id .. "n" .. counter, nil, body)
  end
  return wrk.format("%(method)s", paths[(counter %% #paths) + 1], nil, body)
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if condition():
                return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


class OtlpSink:
    """An OTLP/HTTP endpoint that takes every export and drops it: the traced gateway's sink."""

    def __init__(self) -> None:
        self.exports = 0
        self.received_bytes = 0
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                sink.exports += 1
                sink.received_bytes += length
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


class Nodes:
    def __init__(self, client: docker.DockerClient, marker: str) -> None:
        self.containers = []
        self.keys = []
        for index in (1, 2, 3):
            access, secret = f"bench{index}", f"bench-secret-{index}"
            self.keys.append((access, secret))
            self.containers.append(
                client.containers.run(
                    MINIO_IMAGE,
                    "server /data",
                    name=f"{marker}-{index}",
                    environment={
                        "MINIO_ROOT_USER": access,
                        "MINIO_ROOT_PASSWORD": secret,
                        "STANDIN_ANONYMOUS": "1",
                    },
                    labels={LABEL: "1"},
                    detach=True,
                )
            )
        for container in self.containers:
            container.reload()
        for index in range(3):
            wait_for(lambda i=index: self.client(i).list_buckets() is not None, 30, "a node")
            self._open_bucket(index)

    def _open_bucket(self, index: int) -> None:
        client = self.client(index)
        if not client.bucket_exists(BUCKET):
            client.make_bucket(BUCKET)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": ["*"]},
                    "Action": ["s3:GetObject", "s3:PutObject"],
                    "Resource": [f"arn:aws:s3:::{BUCKET}/*"],
                }
            ],
        }
        # MinIO: anonymous requests through a public policy. The stand-in has no policies and
        # accepts them anyway (STANDIN_ANONYMOUS).
        with contextlib.suppress(Exception):
            client.set_bucket_policy(BUCKET, json.dumps(policy))

    def ip(self, index: int) -> str:
        networks = self.containers[index].attrs["NetworkSettings"]["Networks"]
        return next(n["IPAddress"] for n in networks.values() if n["IPAddress"])

    def client(self, index: int) -> Minio:
        access, secret = self.keys[index]
        return Minio(f"{self.ip(index)}:9000", access, secret, secure=False, region="us-east-1")

    def pid(self, index: int) -> int:
        self.containers[index].reload()
        return int(self.containers[index].attrs["State"]["Pid"])

    def remove(self) -> None:
        for container in self.containers:
            container.remove(force=True, v=True)


class Gateway:
    """The gateway as a user runs it (default settings), on a loopback port; with ``source``,
    the gateway of another commit (its ``src`` folder), run by this one's Python."""

    def __init__(
        self,
        marker: str,
        workdir: Path,
        source: Path | None = None,
        workers: int = 1,
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.admin_url = f"http://127.0.0.1:{free_port()}"
        env = dict(
            os.environ,
            GATEWAY_HOST="127.0.0.1",
            GATEWAY_PORT=str(self.port),
            GATEWAY_ADMIN_PORT=self.admin_url.rsplit(":", 1)[1],
            GATEWAY_NODE_NAME_MARKER=marker,
            GATEWAY_WORKERS=str(workers),
            **settings,
        )
        command = [str(GATEWAY)]
        if source is not None:
            env["PYTHONPATH"] = str(source)
            command = [sys.executable, "-c", "from entrypoints.cli import main; main()"]
        # Its access log (one line per request) goes to a file, as `docker logs` would keep it.
        self.log = (workdir / f"gateway-{self.port}.log").open("wb")
        self.process = subprocess.Popen(command, env=env, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(
            lambda: urllib.request.urlopen(f"{self.url}/health/ready").status == 200,
            30,
            "the gateway",
        )

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def rss_kib(self) -> int:
        return rss_kib(self.pids())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class Nginx:
    """nginx with ``workers`` workers: the consistent-hash proxy a user would put there instead."""

    def __init__(self, nodes: Nodes, workdir: Path, workers: int = 1) -> None:
        self.port = free_port()
        root = workdir / f"nginx-{workers}"
        root.mkdir()
        servers = "\n".join(f"    server {nodes.ip(i)}:9000;" for i in range(3))
        (root / "nginx.conf").write_text(f"""
worker_processes {workers};
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  upstream nodes {{
    hash $object_id consistent;
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    client_max_body_size 0;
    location ~ "^/object/(?<object_id>[A-Za-z0-9]{{1,32}})$" {{
      proxy_pass http://nodes/{BUCKET}/$object_id;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_buffering off;
    }}
  }}
}}
""")
        self.process = subprocess.Popen(["nginx", "-c", str(root / "nginx.conf")])
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(
            lambda: socket.create_connection(("127.0.0.1", self.port)).close() is None, 10, "nginx"
        )

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wrk(
    url: str,
    paths: list[str],
    method: str,
    body_size: int,
    connections: int,
    seconds: int,
    workdir: Path,
    fresh: bool = False,
) -> tuple[float, int]:
    """Requests per second and the count of failed responses of one wrk run."""
    paths_file = workdir / f"paths-{uuid.uuid4().hex}.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    script = workdir / f"script-{uuid.uuid4().hex}.lua"
    body = f'string.rep("x", {body_size})' if body_size else "nil"
    script.write_text(
        WRK_SCRIPT
        % {"paths": paths_file, "body": body, "method": method, "fresh": str(fresh).lower()}
    )
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "60s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    ).stdout
    rate = float(
        next(line.split()[1] for line in output.splitlines() if line.startswith("Requests/sec"))
    )
    failed = sum(int(line.split()[-1]) for line in output.splitlines() if "Non-2xx" in line)
    return rate, failed


@dataclass(frozen=True)
class Side:
    """One way through to the nodes: its column, where requests go, its own ID prefix, and the
    processes whose CPU time is its cost (None: not counted)."""

    column: str
    base: str
    prefix: str
    tag: str
    pids: Callable[[], list[int]] | None = None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a gateway's supervisor and workers, nginx's master and workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return [pid]
    return [pid, *(int(child) for child in children)]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes used so far."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


WORKLOADS = (
    ("PUT 1 KiB, new IDs", "PUT", KiB, 1000, 32, True),
    ("PUT 1 KiB, over existing IDs", "PUT", KiB, 1000, 32, False),
    ("GET 1 KiB", "GET", 0, 1000, 32, False),
    ("PUT 16 MiB, new IDs", "PUT", 16 * MiB, 16, 8, True),
    ("PUT 16 MiB, over existing IDs", "PUT", 16 * MiB, 16, 8, False),
    ("GET 16 MiB", "GET", 0, 16, 8, False),
)


def throughput(
    title: str,
    sides: list[Side],
    ratios: list[tuple[str, str]],
    runs: int,
    seconds: int,
    workdir: Path,
    only: list[str],
) -> None:
    """One table: each workload through every side in turn, ``runs`` times; the medians, the
    ``ratios`` (numerator, denominator columns) and each counted side's CPU time per request."""
    print(f"\n{title}")
    counted = [side for side in sides if side.pids is not None]
    print(
        f"{'workload':<34}"
        + "".join(f"{side.column:>9}" for side in sides)
        + "".join(f"{a + '/' + b:>11}" for a, b in ratios)
        + "".join(f"{'cpu ' + side.column:>12}" for side in counted)
        + "   non-2xx " + "/".join(side.column for side in sides)
    )  # fmt: skip
    run_tag = uuid.uuid4().hex[:6]
    # Each side writes the objects it reads through itself: nginx's hash places IDs elsewhere
    # than the gateway's ring, the direct side has one node only, and N=3 keeps three copies.
    for size, count in ((KiB, 1000), (16 * MiB, 16)):
        for side in sides:
            seed_objects(
                f"{side.base}{side.prefix}", [f"{side.tag}b{size}x{i}" for i in range(count)], size
            )
    for label, method, body_size, count, connections, fresh in WORKLOADS:
        if only and not any(wanted.lower() in label.lower() for wanted in only):
            continue
        size = body_size or (16 * MiB if "16 MiB" in label else KiB)
        rates: dict[str, list[float]] = {side.column: [] for side in sides}
        cpu: dict[str, list[float]] = {side.column: [] for side in counted}
        failures: Counter[str] = Counter()
        for run in range(runs):
            for side in sides:
                if fresh:
                    paths = [f"{side.prefix}new{run_tag}r{run}{side.tag}"]
                else:
                    paths = [f"{side.prefix}{side.tag}b{size}x{i}" for i in range(count)]
                pids = side.pids() if side.pids is not None else []
                used = cpu_seconds(pids)
                rate, failed = wrk(
                    side.base, paths, method, body_size, connections, seconds, workdir, fresh=fresh
                )
                if side.pids is not None:
                    # CPU time per request, in microseconds.
                    cpu[side.column].append((cpu_seconds(pids) - used) / (rate * seconds) * 1e6)
                rates[side.column].append(rate)
                failures[side.column] += failed
        medians = {column: statistics.median(values) for column, values in rates.items()}
        unit, scale = ("MB/s", size / 1e6) if size >= MiB else ("req/s", 1.0)
        print(
            f"{label + ' (' + unit + ')':<34}"
            + "".join(f"{medians[side.column] * scale:>9.0f}" for side in sides)
            + "".join(f"{medians[a] / medians[b]:>11.2f}" for a, b in ratios)
            + "".join(f"{statistics.median(cpu[side.column]):>10.0f}us" for side in counted)
            + "   "
            + "/".join(str(failures[side.column]) for side in sides)
        )


def seed_objects(base: str, ids: list[str], size: int) -> None:
    """Write the objects the GET and overwrite workloads use, through the given base URL."""
    http = urllib3.PoolManager(maxsize=8)
    body = b"x" * size
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda i: http.request("PUT", f"{base}{i}", body=body).status, ids)
        )
    assert all(200 <= status < 300 for status in statuses), Counter(statuses)


@contextlib.contextmanager
def peak_rss(pids: Callable[[], list[int]]) -> Iterator[dict[str, int]]:
    """RSS of the processes together, idle and at their peak, and the peak of the largest one."""
    figures = {"idle": rss_kib(pids()), "peak": 0, "peak_process": 0, "processes": len(pids())}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            current = pids()
            figures["peak"] = max(figures["peak"], rss_kib(current))
            figures["peak_process"] = max(
                figures["peak_process"], *(rss_kib([pid]) for pid in current)
            )
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield figures
    finally:
        done.set()
        sampler.join()


def memory_line(figures: dict[str, int], target_mib: int) -> str:
    processes = figures["processes"]
    if processes == 1:
        return (
            f"gateway RSS idle {figures['idle'] / 1024:.0f} MiB, peak "
            f"{figures['peak'] / 1024:.0f} MiB (target <= {target_mib} MiB)"
        )
    return (
        f"gateway RSS ({processes} processes: the supervisor and {processes - 1} workers) idle "
        f"{figures['idle'] / 1024:.0f} MiB, peak {figures['peak'] / 1024:.0f} MiB together; "
        f"largest process peak {figures['peak_process'] / 1024:.0f} MiB "
        f"(target <= {target_mib} MiB per worker)"
    )


def source_file(workdir: Path, size: int) -> tuple[Path, bytes]:
    path = workdir / f"upload-{size}.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size // MiB):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            out.write(chunk)
    return path, digest.digest()


def read_back_intact(url: str, digest: bytes) -> bool:
    check = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=600) as response:
        while chunk := response.read(MiB):
            check.update(chunk)
    return check.digest() == digest


def memory_with_content_length(
    marker: str,
    workdir: Path,
    uploads: int,
    size: int,
    *,
    replicas: int = 1,
    target_mib: int = 120,
) -> None:
    source, digest = source_file(workdir, size)
    gateway = Gateway(marker, workdir, workers=CORES, GATEWAY_REPLICAS=str(replicas))
    try:
        # urllib3 applies the connect timeout to each send as well: a send that stalls for 5 s
        # (the gateway not reading) abandons the upload, as an impatient client would.
        http = urllib3.PoolManager(
            maxsize=uploads, timeout=urllib3.Timeout(connect=5, read=600), retries=False
        )

        def upload(index: int) -> str:
            try:
                with source.open("rb") as body:
                    response = http.request(
                        "PUT",
                        f"{gateway.url}/object/cl{index}",
                        body=body,
                        headers={"Content-Length": str(size)},
                        preload_content=True,
                    )
                return str(response.status)
            except urllib3.exceptions.HTTPError as exc:
                return f"abandoned ({type(exc).__name__})"

        with peak_rss(gateway.pids) as figures:
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=uploads) as pool:
                statuses = list(pool.map(upload, range(uploads)))
            elapsed = time.monotonic() - started
        intact = read_back_intact(f"{gateway.url}/object/cl0", digest)
        section = "(b1)" if replicas == 1 else f"(b3) N={replicas}:"
        print(
            f"\n{section} memory: {uploads} concurrent uploads of {size // MiB} MiB with "
            "Content-Length (urllib3, 5 s send timeout)"
        )
        print(
            f"statuses: {dict(Counter(statuses))}; {uploads * size / MiB / elapsed:.0f} MiB/s in "
            f"all; read back intact: {intact}"
        )
        print(memory_line(figures, target_mib))
    finally:
        gateway.stop()
        source.unlink()


def memory_chunked(marker: str, workdir: Path, uploads: int, size: int) -> None:
    source, digest = source_file(workdir, size)
    gateway = Gateway(marker, workdir, workers=CORES)
    try:
        with peak_rss(gateway.pids) as figures:
            started = time.monotonic()
            curls = [
                subprocess.Popen(
                    [
                        "curl",
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "--max-time",
                        "600",
                        "-H",
                        "Transfer-Encoding: chunked",
                        "-T",
                        str(source),
                        f"{gateway.url}/object/chunked{i}",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for i in range(uploads)
            ]
            statuses = [curl.communicate(timeout=700)[0] for curl in curls]
            elapsed = time.monotonic() - started
        intact = read_back_intact(f"{gateway.url}/object/chunked0", digest)
        print(f"\n(b2) memory: {uploads} concurrent chunked uploads of {size // MiB} MiB (curl)")
        print(
            f"statuses: {dict(Counter(statuses))}; {uploads * size / MiB / elapsed:.0f} MiB/s in "
            f"all; read back intact: {intact}"
        )
        print(memory_line(figures, 150))
    finally:
        gateway.stop()
        source.unlink()


def owner_ids(gateway: Gateway, nodes: Nodes, count: int) -> dict[int, list[str]]:
    """IDs written through the gateway, grouped by the node that holds them."""
    ids = [f"frozen{i}" for i in range(count)]
    seed_objects(f"{gateway.url}/object/", ids, KiB)
    by_node: dict[int, list[str]] = {}
    for index in range(3):
        held = {
            obj.object_name for obj in nodes.client(index).list_objects(BUCKET, prefix="frozen")
        }
        by_node[index] = [i for i in ids if i in held]
    return by_node


def frozen_node(marker: str, nodes: Nodes, workdir: Path, seconds: float) -> None:
    gateway = Gateway(marker, workdir, workers=CORES)
    try:
        by_node = owner_ids(gateway, nodes, 300)
        frozen_ids, healthy_ids = by_node[0], by_node[1] + by_node[2]
        pid = nodes.pid(0)
        os.kill(pid, signal.SIGSTOP)
        try:
            stop_at = time.monotonic() + seconds
            outcomes: Counter[str] = Counter()
            lock = threading.Lock()

            def hammer(worker: int) -> None:
                n = 0
                while time.monotonic() < stop_at:
                    object_id = frozen_ids[(worker + n) % len(frozen_ids)]
                    n += 1
                    try:
                        with urllib.request.urlopen(
                            f"{gateway.url}/object/{object_id}", timeout=30
                        ) as response:
                            outcome = str(response.status)
                    except urllib.error.HTTPError as exc:
                        outcome = str(exc.code)
                    except OSError:
                        outcome = "no answer within 30 s"
                    with lock:
                        outcomes[outcome] += 1

            latencies: list[float] = []

            def measure() -> None:
                n = 0
                body = b"y" * KiB
                while time.monotonic() < stop_at:
                    object_id = healthy_ids[n % len(healthy_ids)]
                    n += 1
                    started = time.perf_counter()
                    put = urllib.request.Request(
                        f"{gateway.url}/object/{object_id}", data=body, method="PUT"
                    )
                    with urllib.request.urlopen(put, timeout=60):
                        pass
                    with urllib.request.urlopen(f"{gateway.url}/object/{object_id}", timeout=60):
                        pass
                    latencies.append(time.perf_counter() - started)

            with ThreadPoolExecutor(max_workers=41) as pool:
                futures = [pool.submit(hammer, worker) for worker in range(40)]
                measured = pool.submit(measure)
                for future in [*futures, measured]:
                    future.result(timeout=seconds + 120)
        finally:
            os.kill(pid, signal.SIGCONT)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
        print(f"\n(c) one node frozen (SIGSTOP) for {seconds:g} s, 40 clients reading its IDs")
        print(
            f"healthy round trips (PUT + GET 1 KiB): {len(latencies)}, p99 {p99 * 1000:.1f} ms, "
            f"max {latencies[-1] * 1000:.1f} ms (target: max under 1000 ms)"
        )
        print(f"frozen node's requests: {dict(outcomes)}")
    finally:
        gateway.stop()


def rebalance_at_scale(
    client: docker.DockerClient, marker: str, nodes: Nodes, workdir: Path, objects: int
) -> None:
    """(d) A rebalance of ``objects`` objects after a fourth node joins: moves/s and peak RSS."""
    from domain.hash_ring import DEFAULT_VIRTUAL_NODES, HashRing  # noqa: PLC0415
    from domain.object_id import ObjectId  # noqa: PLC0415

    names = [container.name for container in nodes.containers]
    ring = HashRing(names, DEFAULT_VIRTUAL_NODES)
    started = time.monotonic()

    def fill(worker: int) -> None:
        clients = [nodes.client(i) for i in range(3)]
        for n in range(worker, objects, 16):
            object_id = f"scale{n}"
            index = names.index(ring.owner(ObjectId(object_id)))
            clients[index].put_object(BUCKET, object_id, io.BytesIO(b"x" * 100), 100)

    with ThreadPoolExecutor(max_workers=16) as pool:
        for future in [pool.submit(fill, worker) for worker in range(16)]:
            future.result(timeout=3600)
    print(f"\n(d) rebalance: {objects} objects of 100 bytes on three nodes ", end="")
    print(f"(written in {time.monotonic() - started:.0f} s), then a fourth node")
    fourth = client.containers.run(
        MINIO_IMAGE,
        "server /data",
        name=f"{marker}-4",
        environment={
            "MINIO_ROOT_USER": "bench4",
            "MINIO_ROOT_PASSWORD": "bench-secret-4",
            "STANDIN_ANONYMOUS": "1",
        },
        labels={LABEL: "1"},
        detach=True,
    )
    gateway = Gateway(marker, workdir)
    try:
        wait_for(
            lambda: (
                len(
                    json.loads(urllib.request.urlopen(f"{gateway.url}/health/ready").read())[
                        "nodes"
                    ]
                )
                == 4
            ),
            60,
            "the fourth node to join",
        )
        for label in ("after the join", "again, nothing left to move"):
            peak = [gateway.rss_kib()]
            done = threading.Event()

            def sample(peak: list[int] = peak, done: threading.Event = done) -> None:
                while not done.wait(0.2):
                    peak[0] = max(peak[0], gateway.rss_kib())

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.monotonic()
            result = subprocess.run(
                [str(GATEWAY), "rebalance"],
                env=dict(os.environ, GATEWAY_ADMIN_URL=gateway.admin_url),
                capture_output=True,
                text=True,
                timeout=3600,
                check=False,
            )
            elapsed = time.monotonic() - started
            done.set()
            sampler.join()
            summary = json.loads(result.stdout.splitlines()[-1])
            print(
                f"rebalance {label}: {summary['moved']} moved in {elapsed:.1f} s "
                f"({summary['moved'] / elapsed:.0f} moves/s, {objects / elapsed:.0f} objects "
                f"looked at/s), exit {result.returncode}, gateway peak RSS "
                f"{peak[0] / 1024:.0f} MiB"
            )
    finally:
        gateway.stop()
        fourth.remove(force=True, v=True)


def checkout(ref: str, workdir: Path) -> Path:
    """The ``src`` folder of ``ref``, exported from this repository (nothing is checked out)."""
    folder = workdir / f"baseline-{ref}"
    folder.mkdir()
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def run_throughput(args: argparse.Namespace, marker: str, nodes: Nodes, workdir: Path) -> None:
    """(a): a table with one worker each (with tracing, a node directly and the baseline beside
    them), then one with as many workers as cores, each beside nginx with as many."""
    started: list[Gateway | Nginx] = []
    sink = OtlpSink()
    try:
        print(
            f"\n(a) throughput, wrk, median of {args.runs} runs of {args.seconds} s each, sides "
            "taking turns; cpu: the side's processes' CPU time per request (user + system)"
        )
        print(
            "    N=1: the gateway (access log on, tracing off); N=3: GATEWAY_REPLICAS=3 (W=2, R=2);"
            " traced: N=1 with tracing on, every request sampled"
        )
        for workers in sorted({1, CORES}):
            gateway = Gateway(marker, workdir, workers=workers)
            replicated = Gateway(marker, workdir, workers=workers, GATEWAY_REPLICAS="3")
            nginx = Nginx(nodes, workdir, workers)
            started += [gateway, replicated, nginx]
            sides = [
                Side("N=1", gateway.url, "/object/", f"g{workers}", gateway.pids),
                Side("N=3", replicated.url, "/object/", f"r{workers}", replicated.pids),
                Side("nginx", nginx.url, "/object/", f"n{workers}", nginx.pids),
            ]
            ratios = [("N=1", "nginx"), ("N=3", "nginx")]
            title = f"with {workers} worker{'s' if workers > 1 else ''} each"
            if workers == 1:
                traced = Gateway(
                    marker,
                    workdir,
                    OTEL_EXPORTER_OTLP_ENDPOINT=sink.url,
                    OTEL_TRACES_SAMPLER="always_on",
                )
                started.append(traced)
                sides += [
                    Side("traced", traced.url, "/object/", "t", traced.pids),
                    Side("direct", f"http://{nodes.ip(0)}:9000", f"/{BUCKET}/", "d"),
                ]
                ratios += [("traced", "N=1"), ("N=1", "direct")]
                if args.baseline:
                    baseline = Gateway(marker, workdir, source=checkout(args.baseline, workdir))
                    started.append(baseline)
                    sides.append(Side("base", baseline.url, "/object/", "b", baseline.pids))
                    ratios += [("N=1", "base"), ("base", "nginx")]
                    title += f"; base: the gateway of {args.baseline}, N=1, as shipped then"
            throughput(title, sides, ratios, args.runs, args.seconds, workdir, args.workload)
            print(
                "gateway RSS after these runs: "
                + ", ".join(
                    f"{side.column} {rss_kib(side.pids()) / 1024:.0f} MiB"
                    for side in sides
                    if side.pids is not None and side.column != "nginx"
                )
            )
        print(f"the OTLP sink took {sink.exports} exports, {sink.received_bytes / 1e6:.1f} MB")
    finally:
        for process in reversed(started):
            process.stop()
        sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--workload",
        action="append",
        default=[],
        help="run only the throughput workloads whose label contains this (repeatable)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the gateway of this commit (a git ref), N=1, side by side (column base)",
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-frozen", action="store_true")
    parser.add_argument(
        "--rebalance-objects",
        type=int,
        default=0,
        help="(d) also time a rebalance of this many objects after a fourth node joins",
    )
    args = parser.parse_args()
    for tool in ("wrk", "curl", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install wrk curl nginx-light)")
    client = docker.from_env()
    marker = f"amazin-object-storage-node-bench{uuid.uuid4().hex[:8]}"
    print(f"nodes: 3 x {MINIO_IMAGE}; gateway: {GATEWAY}; nginx: {shutil.which('nginx')}")
    nodes = Nodes(client, marker)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            if not args.skip_throughput:
                run_throughput(args, marker, nodes, workdir)
            if not args.skip_memory:
                memory_with_content_length(marker, workdir, uploads=16, size=128 * MiB)
                memory_chunked(marker, workdir, uploads=8, size=256 * MiB)
                memory_with_content_length(
                    marker, workdir, uploads=16, size=128 * MiB, replicas=3, target_mib=150
                )
            if not args.skip_frozen:
                frozen_node(marker, nodes, workdir, seconds=15)
            if args.rebalance_objects:
                rebalance_at_scale(client, marker, nodes, workdir, args.rebalance_objects)
    finally:
        nodes.remove()
        client.close()


if __name__ == "__main__":
    main()
