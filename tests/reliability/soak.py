"""A soak: clients with an exact model of their IDs, while the fleet changes underneath.

Each client owns its IDs and runs PUT (with and without Content-Length), GET, HEAD, Range and
DELETE against them, one at a time, remembering every acknowledged write by its SHA-256. A write
that failed may or may not have landed: until the next acknowledged one, either is allowed. Every
read is checked against that model on the spot, and every ID once more at the end:

- lost: 404 where an acknowledged object must be;
- stale: a version older than the last acknowledged one;
- resurrected: an object after its acknowledged delete;
- corrupt: bytes no write of the ID ever had;
- a 5xx other than 503, or a 503 while no node is sick (with ``replicas`` = 3: any 503 at all,
  since only one node at a time is ever sick).

Meanwhile the fleet changes as the README tells operators to change it: a node added, the fleet
rebalanced; a node killed and restarted; a node drained and removed; a node paused. The gateway is
a process of its own (its RSS is sampled from /proc), and the commands are the real ones. With one
copy per ID, the stand-in node may lose a write that SIGKILL cuts off: only IDs with a write in
flight at a kill are excused; with three copies, nothing is. Every loop is bounded in count and
time; traffic goes only to loopback and to the containers the soak started.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.integration.support import (
    GatewayProcess,
    StorageNode,
    new_run_marker,
    start_node,
    wait_for,
    wait_until_ready,
)

KiB, MiB = 1024, 1024 * 1024
_DELETED = "deleted"
# After a node is well again, its breaker may rest for one cool-down (5 s) before it serves.
_SICK_AFTERMATH_SECONDS = 8.0


@dataclass(frozen=True)
class Written:
    """What an ID holds after a write: a body's digest and size, or deleted."""

    digest: str
    size: int = 0

    @property
    def deleted(self) -> bool:
        return self.digest == _DELETED


DELETED = Written(_DELETED)


@dataclass
class IdModel:
    acked: Written | None = None  # None: never written
    history: list[Written] = field(default_factory=list)  # every acknowledged state, in order
    unsure: list[Written] = field(default_factory=list)  # failed writes since the last ack
    bodies: dict[str, bytes] = field(default_factory=dict)  # digest -> body, for Range checks

    def allowed(self) -> list[Written | None]:
        return [self.acked, *self.unsure]


@dataclass
class Figures:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    excused: set[str] = field(default_factory=set)
    peak_rss_mib: float = 0.0  # of one gateway's processes together
    peak_process_rss_mib: float = 0.0  # of its largest process (a worker's, with several)
    ids: int = 0
    sick_503: int = 0

    def summary(self) -> str:
        kinds = Counter(v.split(":", 1)[0] for v in self.violations)
        return (
            f"{sum(self.requests.values())} requests on {self.ids} IDs "
            f"({', '.join(f'{k} {n}' for k, n in sorted(self.requests.items()))}); "
            f"{len(self.events)} fleet events; violations: {len(self.violations)}"
            f"{' ' + dict(kinds).__repr__() if kinds else ''}; 503 while a node was sick: "
            f"{self.sick_503}; IDs excused by a kill: {len(self.excused)}; "
            f"gateway peak RSS {self.peak_rss_mib:.0f} MiB "
            f"(largest process {self.peak_process_rss_mib:.0f} MiB)"
        )

    def sample_rss(self, gateway: GatewayProcess) -> None:
        by_process = gateway.rss_by_process_mib()
        self.peak_rss_mib = max(self.peak_rss_mib, sum(by_process))
        self.peak_process_rss_mib = max(self.peak_process_rss_mib, *by_process)


class SickWindows:
    """When a node was sick (killed, paused): the only times a 503 is allowed (never, when every
    ID has copies to spare)."""

    def __init__(self, tolerated: bool = True) -> None:
        self._tolerated = tolerated
        self._lock = threading.Lock()
        self._open = 0
        self._last_end = 0.0

    @contextlib.contextmanager
    def sick(self) -> Iterator[None]:
        with self._lock:
            self._open += 1
        try:
            yield
        finally:
            with self._lock:
                self._open -= 1
                self._last_end = time.monotonic()

    def allows_503(self, started: float) -> bool:
        if not self._tolerated:
            return False
        with self._lock:
            return self._open > 0 or started < self._last_end + _SICK_AFTERMATH_SECONDS


class Client(threading.Thread):
    """One client and its IDs, checking every answer against its model."""

    def __init__(
        self,
        index: int,
        url: str,
        ids: int,
        deadline: float,
        sick: SickWindows,
        figures: Figures,
        lock: threading.Lock,
    ) -> None:
        super().__init__(name=f"soak-client-{index}", daemon=True)
        self.index = index
        self.url = url
        self.models = {f"soak{index}x{i}": IdModel() for i in range(ids)}
        self.deadline = deadline
        self.sick = sick
        self.figures = figures
        self.lock = lock
        self.random = random.Random(1000 + index)
        self.in_flight: str | None = None
        self.crash: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=60) as http:
                while time.monotonic() < self.deadline:
                    self.step(http)
        except BaseException as exc:  # reported by the soak, not lost in a thread
            self.crash = exc

    def step(self, http: httpx.Client) -> None:
        object_id = self.random.choice(list(self.models))
        op = self.random.choices(
            ["put", "get", "head", "range", "delete"], weights=[35, 30, 10, 10, 15]
        )[0]
        self.in_flight = object_id if op in ("put", "delete") else None
        started = time.monotonic()
        try:
            if op == "put":
                self.put(http, object_id, started)
            elif op == "delete":
                self.delete(http, object_id, started)
            else:
                self.read(http, object_id, op, started)
        finally:
            self.in_flight = None

    def body(self) -> bytes:
        kind = self.random.random()
        size = (
            self.random.randint(0, 4 * KiB)
            if kind < 0.7
            else self.random.randint(64 * KiB, 512 * KiB)
            if kind < 0.92
            else self.random.randint(1 * MiB, 3 * MiB)
        )
        return self.random.randbytes(size)

    def put(self, http: httpx.Client, object_id: str, started: float) -> None:
        data = self.body()
        written = Written(hashlib.sha256(data).hexdigest(), len(data))
        model = self.models[object_id]
        model.bodies[written.digest] = data
        chunked = self.random.random() < 0.3
        content = (
            iter([data[i : i + 100_000] for i in range(0, len(data), 100_000)]) if chunked else data
        )
        status = self.request(http, "PUT", object_id, started, content=content)
        if status is not None and status in (200, 201):
            created = model.acked is None or model.acked.deleted
            # With a node down, a lookup may not tell 201 from 200 (the write itself is fine).
            if (
                (status == 201) != created
                and not model.unsure
                and not self.sick.allows_503(started)
                and object_id not in self.figures.excused
            ):
                self.violation(f"status: PUT {object_id} answered {status}, model {model.acked}")
            self.acknowledge(model, written)
        else:
            model.unsure.append(written)

    def delete(self, http: httpx.Client, object_id: str, started: float) -> None:
        model = self.models[object_id]
        status = self.request(http, "DELETE", object_id, started)
        if status == 204:
            self.acknowledge(model, DELETED)
        else:
            model.unsure.append(DELETED)

    def acknowledge(self, model: IdModel, written: Written) -> None:
        model.acked = written
        model.history.append(written)
        model.unsure = []
        # Bodies no longer allowed need not be kept (memory stays bounded).
        keep = {w.digest for w in model.allowed() if w is not None}
        model.bodies = {d: b for d, b in model.bodies.items() if d in keep}

    def read(self, http: httpx.Client, object_id: str, op: str, started: float) -> None:
        model = self.models[object_id]
        headers = {}
        first = last = 0
        if op == "range":
            first = self.random.randint(0, 2000)
            last = first + self.random.randint(0, 5000)
            headers["Range"] = f"bytes={first}-{last}"
        method = "HEAD" if op == "head" else "GET"
        with self.lock:
            self.figures.requests[op] += 1
        try:
            response = http.request(method, f"/object/{object_id}", headers=headers)
        except httpx.TransportError as exc:
            self.violation(f"transport: {method} {object_id}: {exc!r}")
            return
        self.count(response.status_code, started, f"{method} {object_id}")
        if response.status_code >= 500:
            return
        check(self, object_id, model, response, op, first, last)

    def request(
        self, http: httpx.Client, method: str, object_id: str, started: float, **kwargs: object
    ) -> int | None:
        with self.lock:
            self.figures.requests[method.lower()] += 1
        try:
            response = http.request(method, f"/object/{object_id}", **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            self.violation(f"transport: {method} {object_id}: {exc!r}")
            return None
        self.count(response.status_code, started, f"{method} {object_id}")
        return response.status_code

    def count(self, status: int, started: float, what: str) -> None:
        with self.lock:
            self.figures.statuses[status] += 1
        if status == 503:
            if self.sick.allows_503(started):
                with self.lock:
                    self.figures.sick_503 += 1
            else:
                self.violation(f"503 while no node was sick: {what}")
        elif status >= 500:
            self.violation(f"5xx: {what} answered {status}")

    def violation(self, what: str) -> None:
        with self.lock:
            self.figures.violations.append(
                f"{what} (client {self.index}, t={time.monotonic():.1f})"
            )


def check(
    client: Client,
    object_id: str,
    model: IdModel,
    response: httpx.Response,
    op: str,
    first: int = 0,
    last: int = 0,
) -> None:
    """One answer against the model: what it may be, and what kind of wrong it is."""
    if object_id in client.figures.excused:
        return
    allowed = model.allowed()
    if response.status_code == 404:
        if any(state is None or state.deleted for state in allowed):
            return
        client.violation(f"lost: {op} {object_id} 404, acknowledged {model.acked}")
        return
    live = [state for state in allowed if state is not None and not state.deleted]
    if response.status_code == 416 and op == "range":
        if any(state.size <= first for state in live):
            return  # the range lies beyond this version
        client.violation(describe(model, f"{op} {object_id} 416"))
        return
    if response.status_code not in (200, 206):
        client.violation(f"status: {op} {object_id} answered {response.status_code}")
        return
    if op == "head":
        size = int(response.headers["content-length"])
        if not any(state.size == size for state in live):
            client.violation(describe(model, f"{op} {object_id}", size=size))
        return
    content = response.content
    if op == "range":
        for state in live:
            data = model.bodies.get(state.digest)
            if data is None or not data:
                continue
            if first < len(data) and content == data[first : last + 1]:
                return
        if response.status_code == 200 and any(
            hashlib.sha256(content).hexdigest() == s.digest for s in live
        ):
            return  # a range beyond an empty body is answered whole
        client.violation(describe(model, f"{op} {object_id}", body=content))
        return
    digest = hashlib.sha256(content).hexdigest()
    if not any(state.digest == digest for state in live):
        sizes = [state and state.size for state in allowed]
        shown = f"{op} {object_id} ({len(content)} bytes; allowed sizes {sizes})"
        client.violation(describe(model, shown, digest=digest))


def describe(
    model: IdModel,
    what: str,
    *,
    size: int | None = None,
    digest: str | None = None,
    body: bytes | None = None,
) -> str:
    history = model.history
    if digest is not None:
        if any(w.digest == digest for w in history):
            return f"stale: {what} served an older acknowledged version"
        if model.acked is not None and model.acked.deleted:
            return f"resurrected: {what} served an object after its delete"
        return f"corrupt: {what} served bytes no write had"
    if model.acked is not None and model.acked.deleted:
        return f"resurrected: {what} answered an object after its delete"
    return f"stale or corrupt: {what} (size {size}, body {len(body or b'')} bytes)"


class Fleet:
    """The soak's own nodes (a marker of their own) and the changes made to them."""

    def __init__(self, figures: Figures, sick: SickWindows) -> None:
        self.marker = new_run_marker()
        self.nodes: list[StorageNode] = []
        self.next_index = 1
        self.figures = figures
        self.sick = sick

    def add(self) -> StorageNode:
        node = start_node(self.marker, self.next_index)
        self.next_index += 1
        self.nodes.append(node)
        return node

    def remove(self, node: StorageNode) -> None:
        node.wrapped.remove(force=True, v=True)
        node.container.get_docker_client().client.close()
        self.nodes.remove(node)

    def event(self, what: str, lines: list[dict[str, object]] | None = None) -> None:
        self.figures.events.append(f"t={time.monotonic():.1f} {what}")
        trouble = [
            line
            for line in lines or []
            if line.get("outcome") in ("failed", "left")
            or line.get("event") in ("error", "remaining")
        ]
        for line in trouble[:10]:
            self.figures.events.append(f"    {line}")

    def close(self) -> None:
        for node in list(self.nodes):
            with contextlib.suppress(Exception):
                self.remove(node)


def soak(
    duration_seconds: float,
    clients: int = 8,
    ids_per_client: int = 24,
    replicas: int = 1,
    workers: int = 1,
) -> Figures:
    """Run the soak for about ``duration_seconds`` of load; its figures (violations included)."""
    figures = Figures(ids=clients * ids_per_client)
    replicated = replicas > 1
    sick = SickWindows(tolerated=not replicated)
    fleet = Fleet(figures, sick)
    workdir = Path(os.environ.get("SOAK_WORKDIR", "/tmp"))
    gateway: GatewayProcess | None = None
    lock = threading.Lock()
    try:
        for _ in range(3):
            fleet.add()
        gateway = GatewayProcess(fleet.marker, workdir, replicas, workers)
        deadline = time.monotonic() + duration_seconds
        workers = [
            Client(i, gateway.url, ids_per_client, deadline, sick, figures, lock)
            for i in range(clients)
        ]
        for worker in workers:
            worker.start()
        sampler_stop = threading.Event()
        sampler = threading.Thread(
            target=_sample_rss, args=(gateway, figures, sampler_stop), daemon=True
        )
        sampler.start()
        _change_the_fleet(fleet, gateway, workers, deadline, excuse_kills=not replicated)
        for worker in workers:
            worker.join(timeout=120)
            if worker.crash is not None:
                raise worker.crash
        sampler_stop.set()
        _verify_every_id(gateway, workers, figures, lock)
    finally:
        if gateway is not None:
            gateway.stop()
        fleet.close()
    return figures


def _sample_rss(gateway: GatewayProcess, figures: Figures, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        with contextlib.suppress(OSError, StopIteration):
            figures.sample_rss(gateway)


def _change_the_fleet(
    fleet: Fleet,
    gateway: GatewayProcess,
    workers: list[Client],
    deadline: float,
    *,
    excuse_kills: bool,
) -> None:
    """A node added and rebalanced, one killed and restarted, one drained and removed, one paused;
    again while time remains."""

    def at(fraction_done: float, start: float, length: float) -> None:
        target = start + fraction_done * length
        while time.monotonic() < min(target, deadline):
            time.sleep(0.1)

    while time.monotonic() < deadline - 20:
        start, length = time.monotonic(), min(80.0, deadline - time.monotonic() - 5)
        at(0.08, start, length)
        newcomer = fleet.add()
        fleet.event(f"added {newcomer.name}")
        at(0.15, start, length)
        status, lines = gateway.command("rebalance")
        fleet.event(f"rebalance: exit {status}, {lines[-1] if lines else 'no output'}", lines)
        at(0.30, start, length)
        victim = fleet.nodes[0]
        with fleet.sick.sick():
            # With one copy, a write in flight at the kill (just before or as it happens) may be
            # lost or cut.
            if excuse_kills:
                fleet.figures.excused.update(w.in_flight for w in workers if w.in_flight)
            victim.wrapped.kill()
            if excuse_kills:
                fleet.figures.excused.update(w.in_flight for w in workers if w.in_flight)
            fleet.event(f"killed {victim.name}")
            time.sleep(3)
            victim.wrapped.start()
            wait_until_ready(victim)
            fleet.event(f"restarted {victim.name}")
        at(0.45, start, length)
        status, lines = gateway.command("drain", newcomer.name)
        fleet.event(
            f"drain {newcomer.name}: exit {status}, {lines[-1] if lines else 'no output'}", lines
        )
        if status == 0:
            fleet.remove(newcomer)
            fleet.event(f"removed {newcomer.name}")
        at(0.65, start, length)
        paused = fleet.nodes[1]
        with fleet.sick.sick():
            paused.wrapped.pause()
            fleet.event(f"paused {paused.name}")
            time.sleep(2)
            paused.wrapped.unpause()
            fleet.event(f"unpaused {paused.name}")
        at(1.0, start, length)


def _verify_every_id(
    gateway: GatewayProcess, workers: list[Client], figures: Figures, lock: threading.Lock
) -> None:
    """Once the load has stopped: every ID, as acknowledged."""
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        wait_for(lambda: http.get("/health/ready").status_code == 200, 30, "the fleet to be ready")
        for worker in workers:
            for object_id, model in worker.models.items():
                response = http.get(f"/object/{object_id}")
                for _ in range(20):  # a node just back may rest for a cool-down
                    if response.status_code != 503:
                        break
                    time.sleep(0.5)
                    response = http.get(f"/object/{object_id}")
                check(worker, object_id, model, response, "final get")


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=90, help="seconds of load")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--ids-per-client", type=int, default=24)
    parser.add_argument("--replicas", type=int, default=1, help="GATEWAY_REPLICAS")
    parser.add_argument("--workers", type=int, default=1, help="GATEWAY_WORKERS")
    args = parser.parse_args(argv)
    figures = soak(args.duration, args.clients, args.ids_per_client, args.replicas, args.workers)
    for event in figures.events:
        print(event)
    shown = Counter[str]()
    for violation in figures.violations:
        kind = violation.split(":", 1)[0]
        shown[kind] += 1
        if shown[kind] <= 8:
            print("VIOLATION", violation)
    print(figures.summary())
    return 1 if figures.violations else 0


if __name__ == "__main__":
    sys.exit(main())
