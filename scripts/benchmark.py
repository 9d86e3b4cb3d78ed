#!/usr/bin/env python3
"""Measures the gateway against its own nodes and prints the figures.

Starts three nodes (MINIO_IMAGE, default the pinned MinIO release) and the gateway (a subprocess on
a loopback port), then:
  (a) throughput with wrk: 1 KiB PUT and GET in requests/s, 16 MiB PUT and GET in MB/s, through
      the gateway and directly to one node (presigned URLs, so the same client speaks to both),
      at the same concurrency; each run repeated, the median quoted, with the gateway/direct ratio;
  (b) the gateway's peak RSS while 8 concurrent 256 MiB uploads stream through a fresh gateway.
All traffic goes to loopback or to the containers this script started; every loop is bounded.

Usage: .venv/bin/python scripts/benchmark.py [--runs 3] [--seconds 5]
Needs: a Docker daemon, wrk and curl on PATH.
"""

from __future__ import annotations

import argparse
import hashlib
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
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import docker
from minio import Minio

MINIO_IMAGE = os.environ.get("MINIO_IMAGE") or "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
LABEL = "amazin-gateway-tests"
BUCKET = "objects"
KiB, MiB = 1024, 1024 * 1024
GATEWAY = Path(sys.executable).with_name("object-gateway")

WRK_SCRIPT = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local body = %(body)s
local counter = 0
-- Each wrk thread starts at another place in the list, so they rarely write one key at once.
local threads_set_up = 0
setup = function(thread)
  thread:set("offset", threads_set_up * 7919)
  threads_set_up = threads_set_up + 1
end
init = function(args) counter = offset end
request = function()
  counter = counter + 1
  return wrk.format("%(method)s", paths[(counter %% #paths) + 1], nil, body)
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


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
                    environment={"MINIO_ROOT_USER": access, "MINIO_ROOT_PASSWORD": secret},
                    labels={LABEL: "1"},
                    detach=True,
                )
            )
        for container in self.containers:
            container.reload()
        for index in range(3):
            wait_for(lambda i=index: self.client(i).list_buckets() is not None, 30, "a node")

    def ip(self, index: int) -> str:
        networks = self.containers[index].attrs["NetworkSettings"]["Networks"]
        return next(n["IPAddress"] for n in networks.values() if n["IPAddress"])

    def client(self, index: int) -> Minio:
        access, secret = self.keys[index]
        return Minio(f"{self.ip(index)}:9000", access, secret, secure=False, region="us-east-1")

    def remove(self) -> None:
        for container in self.containers:
            container.remove(force=True, v=True)


class Gateway:
    def __init__(self, marker: str) -> None:
        self.port = free_port()
        env = dict(
            os.environ,
            GATEWAY_HOST="127.0.0.1",
            GATEWAY_PORT=str(self.port),
            GATEWAY_NODE_NAME_MARKER=marker,
            GATEWAY_LOG_LEVEL="WARNING",
        )
        self.process = subprocess.Popen([str(GATEWAY)], env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(
            lambda: urllib.request.urlopen(f"{self.url}/health/live").status == 200,
            30,
            "the gateway",
        )

    def rss_kib(self) -> int:
        total = 0
        for pid in [self.process.pid, *self._children()]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total

    def _children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except FileNotFoundError:
            return []
        return [int(pid) for pid in text.split()]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wrk(  # noqa: PLR0917 - a thin wrapper of wrk's own options
    url: str,
    paths: list[str],
    method: str,
    body_size: int,
    connections: int,
    seconds: int,
    workdir: Path,
) -> tuple[float, int]:
    """Requests per second and the count of failed responses of one wrk run."""
    paths_file = workdir / f"paths-{uuid.uuid4().hex}.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    script = workdir / f"script-{uuid.uuid4().hex}.lua"
    body = f'string.rep("x", {body_size})' if body_size else "nil"
    script.write_text(WRK_SCRIPT % {"paths": paths_file, "body": body, "method": method})
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


def throughput(gateway: Gateway, nodes: Nodes, runs: int, seconds: int, workdir: Path) -> None:
    direct = nodes.client(0)
    if not direct.bucket_exists(BUCKET):
        direct.make_bucket(BUCKET)
    direct_base = f"http://{nodes.ip(0)}:9000"
    print(f"\n(a) throughput, wrk, median of {runs} runs of {seconds} s each")
    print(f"{'workload':<22}{'gateway':>14}{'direct':>14}{'ratio':>8}   non-2xx gateway/direct")
    for label, size, count, connections in (("1 KiB", KiB, 1000, 16), ("16 MiB", 16 * MiB, 8, 4)):
        ids = [f"bench{size}x{i}" for i in range(count)]
        gateway_paths = [f"/object/{i}" for i in ids]
        expiry = timedelta(hours=2)
        for method in ("PUT", "GET"):
            sign = direct.presigned_put_object if method == "PUT" else direct.presigned_get_object
            direct_paths = [sign(BUCKET, i, expires=expiry).removeprefix(direct_base) for i in ids]
            results: dict[str, list[float]] = {"gateway": [], "direct": []}
            failures = {"gateway": 0, "direct": 0}
            for _ in range(runs):
                for side, base, paths in (
                    ("gateway", gateway.url, gateway_paths),
                    ("direct", direct_base, direct_paths),
                ):
                    rate, failed = wrk(
                        base,
                        paths,
                        method,
                        size if method == "PUT" else 0,
                        connections,
                        seconds,
                        workdir,
                    )
                    results[side].append(rate)
                    failures[side] += failed
            gateway_rate = statistics.median(results["gateway"])
            direct_rate = statistics.median(results["direct"])
            if size >= MiB:
                unit = "MB/s"
                shown = (gateway_rate * size / 1e6, direct_rate * size / 1e6)
            else:
                unit = "req/s"
                shown = (gateway_rate, direct_rate)
            print(
                f"{method + ' ' + label + ' (' + unit + ')':<22}{shown[0]:>14.1f}{shown[1]:>14.1f}"
                f"{gateway_rate / direct_rate:>8.2f}   {failures['gateway']}/{failures['direct']}"
            )


def memory(marker: str, workdir: Path, uploads: int, size: int) -> None:
    source = workdir / "upload.bin"
    digest = hashlib.sha256()
    with source.open("wb") as out:
        for _ in range(size // MiB):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            out.write(chunk)
    gateway = Gateway(marker)
    try:
        idle = gateway.rss_kib()
        peak = idle
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, gateway.rss_kib())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
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
                    "-T",
                    str(source),
                    f"{gateway.url}/object/memory{i}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(uploads)
        ]
        statuses = [curl.communicate(timeout=700)[0] for curl in curls]
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        with urllib.request.urlopen(f"{gateway.url}/object/memory0", timeout=600) as response:
            check = hashlib.sha256()
            while chunk := response.read(MiB):
                check.update(chunk)
        intact = check.digest() == digest.digest()
        print(f"\n(b) memory: {uploads} concurrent uploads of {size // MiB} MiB (curl -T)")
        print(
            f"statuses: {sorted(set(statuses))}; {uploads * size / MiB / elapsed:.0f} MiB/s "
            f"in all; object read back intact: {intact}"
        )
        print(
            f"gateway RSS idle: {idle / 1024:.0f} MiB; peak during the uploads: "
            f"{peak / 1024:.0f} MiB (target <= 150 MiB)"
        )
    finally:
        gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install {tool})")
    client = docker.from_env()
    marker = f"amazin-object-storage-node-bench{uuid.uuid4().hex[:8]}"
    print(f"nodes: 3 x {MINIO_IMAGE}; gateway: {GATEWAY}")
    nodes = Nodes(client, marker)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            if not args.skip_throughput:
                gateway = Gateway(marker)
                try:
                    throughput(gateway, nodes, args.runs, args.seconds, Path(workdir))
                    print(
                        f"gateway RSS after the throughput runs: {gateway.rss_kib() / 1024:.0f} MiB"
                    )
                finally:
                    gateway.stop()
            if not args.skip_memory:
                memory(marker, Path(workdir), uploads=8, size=256 * MiB)
    finally:
        nodes.remove()
        client.close()


if __name__ == "__main__":
    main()
