"""The soak with several gateways over one fleet: every guarantee must hold whichever gateway a
request goes through, however writes race and however slowly their bodies come.

Three kinds of clients run at once:

- roaming clients, each with IDs of its own and an exact model of them (``soak.Client``), sending
  every request through a gateway picked at random: a read must see the last acknowledged write
  whichever gateway took it;
- racing clients, all on a few shared IDs, through both gateways: fast and slow (trickled) bodies
  and deletes. Every operation's start, end and outcome is kept. During the run a read must serve
  bytes some write of the ID had; once quiet, every shared ID must read the same through every
  gateway with each node paused in turn, and its value must not be older than an acknowledged
  write that started after that value's write ended;
- around a drain: slow uploads (3 to 12 s each) through one gateway while another drains a node;
  once the drain said the node may go, it goes, and every upload acknowledged around the drain
  must read back through every gateway.

Meanwhile a node joins and is rebalanced onto, and nodes are paused in turn. Once the load is
over, a ``repair`` runs (what operators run after changes; it also settles a write that failed
after reaching some replicas). Every loop is bounded in count and time; traffic goes only to
loopback and to the containers the soak started.
"""

from __future__ import annotations

import concurrent.futures
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

from domain.hash_ring import DEFAULT_VIRTUAL_NODES, HashRing
from domain.object_id import ObjectId
from tests.integration.support import GatewayProcess, StorageNode, wait_for
from tests.reliability.soak import (
    Client,
    Figures,
    Fleet,
    KiB,
    SickWindows,
    check,
)

_ABSENT = "absent"
# A paused node's requests meet this time to first byte (then its breaker rests it).
_FIRST_BYTE_SECONDS = "2"


@dataclass(frozen=True)
class Operation:
    """One write of a shared ID as its client saw it."""

    object_id: str
    value: str  # the body's digest, or _ABSENT for a delete
    started: float
    ended: float
    acknowledged: bool


@dataclass
class Shared:
    """The shared IDs' history, and every body any write of them ever sent."""

    ids: list[str]
    operations: list[Operation] = field(default_factory=list)
    bodies: dict[str, set[str]] = field(default_factory=dict)  # ID -> digests
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, operation: Operation) -> None:
        with self.lock:
            self.operations.append(operation)


class RoamingClient(Client):
    """``soak.Client`` with each request through a gateway picked at random."""

    def __init__(self, urls: list[str], *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.urls = urls

    def run(self) -> None:
        try:
            with contextlib.ExitStack() as stack:
                clients = [
                    stack.enter_context(httpx.Client(base_url=url, timeout=60)) for url in self.urls
                ]
                while time.monotonic() < self.deadline:
                    self.step(self.random.choice(clients))
        except BaseException as exc:  # reported by the soak, not lost in a thread
            self.crash = exc


class Racer(threading.Thread):
    """Writes, deletes and reads the shared IDs through every gateway."""

    def __init__(
        self,
        index: int,
        urls: list[str],
        shared: Shared,
        deadline: float,
        sick: SickWindows,
        figures: Figures,
        lock: threading.Lock,
    ) -> None:
        super().__init__(name=f"racer-{index}", daemon=True)
        self.index = index
        self.urls = urls
        self.shared = shared
        self.deadline = deadline
        self.sick = sick
        self.figures = figures
        self.lock = lock
        self.random = random.Random(5000 + index)
        self.crash: BaseException | None = None

    def run(self) -> None:
        try:
            with contextlib.ExitStack() as stack:
                clients = [
                    stack.enter_context(httpx.Client(base_url=url, timeout=60)) for url in self.urls
                ]
                while time.monotonic() < self.deadline:
                    self.step(self.random.choice(clients))
        except BaseException as exc:
            self.crash = exc

    def step(self, http: httpx.Client) -> None:
        object_id = self.random.choice(self.shared.ids)
        op = self.random.choices(["fast", "slow", "delete", "get"], weights=[30, 15, 15, 40])[0]
        started = time.monotonic()
        if op == "get":
            self.read(http, object_id, started)
            return
        if op == "delete":
            status = self.send(http, "DELETE", object_id, started)
            self.shared.record(
                Operation(object_id, _ABSENT, started, time.monotonic(), status == 204)
            )
            return
        size = (
            self.random.randint(0, 4 * KiB)
            if op == "fast"
            else self.random.randint(10 * KiB, 300 * KiB)
        )
        data = self.random.randbytes(size)
        digest = hashlib.sha256(data).hexdigest()
        with self.shared.lock:
            self.shared.bodies.setdefault(object_id, set()).add(digest)
        if op == "fast":
            status = self.send(http, "PUT", object_id, started, content=data)
        else:
            seconds = self.random.uniform(0.5, 3)
            status = self.send(
                http,
                "PUT",
                object_id,
                started,
                content=_trickled(data, seconds),
                headers={"Content-Length": str(len(data))},
            )
        self.shared.record(
            Operation(object_id, digest, started, time.monotonic(), status in (200, 201))
        )

    def read(self, http: httpx.Client, object_id: str, started: float) -> None:
        status = self.send(http, "GET", object_id, started)
        if status != 200:
            return
        # The body was read by send(); its digest is checked there.

    def send(
        self, http: httpx.Client, method: str, object_id: str, started: float, **kwargs: object
    ) -> int | None:
        with self.lock:
            self.figures.requests[f"race {method.lower()}"] += 1
        try:
            response = http.request(method, f"/object/{object_id}", **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            self.violation(f"transport: {method} {object_id}: {exc!r}")
            return None
        status = response.status_code
        with self.lock:
            self.figures.statuses[status] += 1
        if status == 503 and not self.sick.allows_503(started):
            self.violation(f"503 while no node was sick: race {method} {object_id}")
        elif status >= 500 and status != 503:
            self.violation(f"5xx: race {method} {object_id} answered {status}")
        if method == "GET" and status == 200:
            digest = hashlib.sha256(response.content).hexdigest()
            with self.shared.lock:
                known = digest in self.shared.bodies.get(object_id, set())
            if not known:
                self.violation(f"corrupt: race GET {object_id} served bytes no write had")
        return status

    def violation(self, what: str) -> None:
        with self.lock:
            self.figures.violations.append(f"{what} (racer {self.index})")


def _trickled(data: bytes, seconds: float, pieces: int = 6) -> Iterator[bytes]:
    size = max(1, -(-len(data) // pieces))
    for start in range(0, len(data), size):
        time.sleep(seconds / pieces)
        yield data[start : start + size]


def multisoak(
    duration_seconds: float,
    *,
    gateways: int = 2,
    replicas: int = 1,
    workers: int = 1,
    roaming: int = 4,
    racers: int = 4,
    shared_ids: int = 10,
) -> Figures:
    """Run the soak with ``gateways`` gateways for about ``duration_seconds`` of load."""
    figures = Figures(ids=roaming * 16 + shared_ids)
    sick = SickWindows(tolerated=replicas == 1)
    fleet = Fleet(figures, sick)
    workdir = Path(os.environ.get("SOAK_WORKDIR", "/tmp"))
    processes: list[GatewayProcess] = []
    lock = threading.Lock()
    shared = Shared([f"race{i}" for i in range(shared_ids)])
    try:
        for _ in range(3):
            fleet.add()
        for index in range(gateways):
            folder = workdir / f"gateway{index}-{fleet.marker}"
            folder.mkdir(parents=True, exist_ok=True)
            processes.append(
                GatewayProcess(
                    fleet.marker,
                    folder,
                    replicas,
                    workers,
                    GATEWAY_NODE_FIRST_BYTE_TIMEOUT_SECONDS=_FIRST_BYTE_SECONDS,
                )
            )
        urls = [process.url for process in processes]
        deadline = time.monotonic() + duration_seconds
        workers: list[threading.Thread] = [
            RoamingClient(urls, i, urls[0], 16, deadline, sick, figures, lock)
            for i in range(roaming)
        ]
        workers += [Racer(i, urls, shared, deadline, sick, figures, lock) for i in range(racers)]
        for worker in workers:
            worker.start()
        sampler_stop = threading.Event()
        sampler = threading.Thread(
            target=_sample_rss, args=(processes, figures, sampler_stop), daemon=True
        )
        sampler.start()
        drained_uploads = _change_the_fleet(fleet, processes, deadline)
        for worker in workers:
            worker.join(timeout=120)
            crash = getattr(worker, "crash", None)
            if crash is not None:
                raise crash
        sampler_stop.set()
        _repair(fleet, processes[0])
        roamers = [worker for worker in workers if isinstance(worker, RoamingClient)]
        for process in processes:
            _verify_owned(process, roamers)
        _verify_drain_uploads(processes, drained_uploads, figures)
        _verify_shared(fleet, processes, shared, figures)
    finally:
        for process in processes:
            process.stop()
        fleet.close()
    return figures


def _sample_rss(processes: list[GatewayProcess], figures: Figures, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        for process in processes:
            with contextlib.suppress(OSError, StopIteration):
                figures.sample_rss(process)


def _change_the_fleet(
    fleet: Fleet, processes: list[GatewayProcess], deadline: float
) -> dict[str, tuple[bytes, int | None]]:
    """A node joins and is rebalanced onto; nodes paused in turn; a drain through the first
    gateway while the last takes slow uploads. The uploads made around the drain, by ID: their
    bodies and how they were answered."""
    start = time.monotonic()
    length = deadline - start

    def at(fraction: float) -> None:
        while time.monotonic() < min(start + fraction * length, deadline):
            time.sleep(0.1)

    at(0.08)
    newcomer = fleet.add()
    fleet.event(f"added {newcomer.name}")
    at(0.15)
    status, lines = processes[0].command("rebalance")
    fleet.event(f"rebalance: exit {status}, {lines[-1] if lines else 'no output'}", lines)
    at(0.3)
    _pause(fleet, fleet.nodes[0], 2)
    at(0.42)
    uploads = _drain_beside_slow_uploads(fleet, newcomer, processes)
    at(0.8)
    _pause(fleet, fleet.nodes[1], 2)
    at(1.0)
    return uploads


def _pause(fleet: Fleet, node: StorageNode, seconds: float) -> None:
    with fleet.sick.sick():
        node.wrapped.pause()
        fleet.event(f"paused {node.name}")
        time.sleep(seconds)
        node.wrapped.unpause()
        fleet.event(f"unpaused {node.name}")


def _drain_beside_slow_uploads(
    fleet: Fleet, node: StorageNode, processes: list[GatewayProcess]
) -> dict[str, tuple[bytes, int | None]]:
    chosen = random.Random(11)
    # Most on the node to be drained, as the ring has them now; small bodies (read whole before
    # they are placed) and streamed ones (placed as they begin).
    ring = HashRing([n.name for n in fleet.nodes], DEFAULT_VIRTUAL_NODES)
    ids = [f"drainslow{i}" for i in range(600)]
    on_node = [i for i in ids if ring.owner(ObjectId(i)) == node.name][:18] + ids[-6:]
    bodies = {i: chosen.randbytes(chosen.choice((40_000, 200_000))) for i in on_node}
    seconds = {i: chosen.uniform(3, 12) for i in on_node}
    url = processes[-1].url

    def upload(object_id: str) -> int | None:
        data = bodies[object_id]
        with httpx.Client(base_url=url, timeout=60) as http:
            try:
                return http.put(
                    f"/object/{object_id}",
                    content=_trickled(data, seconds[object_id], pieces=8),
                    headers={"Content-Length": str(len(data))},
                ).status_code
            except httpx.TransportError:
                return None

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        answers = {object_id: pool.submit(upload, object_id) for object_id in bodies}
        time.sleep(1)
        status, lines = processes[0].command("drain", node.name)
        fleet.event(f"drain {node.name}: exit {status}, {lines[-1] if lines else 'none'}", lines)
        answered = {object_id: future.result() for object_id, future in answers.items()}
    if status == 0:
        fleet.remove(node)
        fleet.event(f"removed {node.name}")
    acknowledged = sum(1 for code in answered.values() if code in (200, 201))
    fleet.event(f"{acknowledged} of {len(bodies)} slow uploads acknowledged around the drain")
    return {object_id: (bodies[object_id], answered[object_id]) for object_id in bodies}


def _repair(fleet: Fleet, process: GatewayProcess) -> None:
    for attempt in range(3):
        status, lines = process.command("repair")
        fleet.event(f"repair {attempt + 1}: exit {status}", lines)
        if status == 0:
            return


def _get(url: str, object_id: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as http:
        response = http.get(f"/object/{object_id}")
        for _ in range(20):  # a node just back may rest for a cool-down
            if response.status_code != 503:
                break
            time.sleep(0.5)
            response = http.get(f"/object/{object_id}")
        return response


def _verify_owned(process: GatewayProcess, roamers: list[RoamingClient]) -> None:
    for roamer in roamers:
        for object_id, model in roamer.models.items():
            check(roamer, object_id, model, _get(process.url, object_id), "final get")


def _verify_drain_uploads(
    processes: list[GatewayProcess],
    uploads: dict[str, tuple[bytes, int | None]],
    figures: Figures,
) -> None:
    for object_id, (data, status) in uploads.items():
        if status not in (200, 201):
            continue
        for process in processes:
            response = _get(process.url, object_id)
            if response.status_code != 200 or response.content != data:
                figures.violations.append(
                    f"lost: {object_id}, acknowledged {status} around the drain, answered "
                    f"{response.status_code} through {process.url}"
                )


def _answer(response: httpx.Response) -> str | None:
    if response.status_code == 404:
        return _ABSENT
    if response.status_code == 200:
        return hashlib.sha256(response.content).hexdigest()
    return None  # no answer (a paused node's IDs at N=1)


def _verify_shared(
    fleet: Fleet, processes: list[GatewayProcess], shared: Shared, figures: Figures
) -> None:
    """Every shared ID reads the same through every gateway with each node paused in turn, and
    never older than an acknowledged write that started after its value's write ended."""
    answers: dict[str, set[str]] = {object_id: set() for object_id in shared.ids}

    def read_all() -> None:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            asked = {
                (process.url, object_id): pool.submit(_single_get, process.url, object_id)
                for process in processes
                for object_id in shared.ids
            }
            for (_, object_id), future in asked.items():
                answer = _answer(future.result())
                if answer is not None:
                    answers[object_id].add(answer)

    read_all()
    for node in list(fleet.nodes):
        with fleet.sick.sick():
            node.wrapped.pause()
            try:
                read_all()
            finally:
                node.wrapped.unpause()
        # Its breakers rest it for a cool-down: wait until every gateway answers for it again.
        for process in processes:
            wait_for(
                lambda process=process: _ready(process.url), 30, "the gateways to be ready again"
            )
    for object_id, seen in answers.items():
        if len(seen) != 1:
            figures.violations.append(f"diverged: {object_id} read as {len(seen)} values")
            continue
        (value,) = seen
        _check_order(object_id, value, shared, figures)


def _single_get(url: str, object_id: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as http:
        return http.get(f"/object/{object_id}")


def _ready(url: str) -> bool:
    with httpx.Client(base_url=url, timeout=10) as http:
        return http.get("/health/ready").status_code == 200


def _check_order(object_id: str, value: str, shared: Shared, figures: Figures) -> None:
    operations = [op for op in shared.operations if op.object_id == object_id]
    acknowledged = [op for op in operations if op.acknowledged]
    # The writes whose value it is (any delete, for absent; none at all, if nothing was written).
    sources = [op for op in operations if op.value == value]
    if value == _ABSENT and not acknowledged:
        return
    if not sources:
        figures.violations.append(f"corrupt: {object_id} settled on a value no write had")
        return
    if any(not any(later.started > op.ended for later in acknowledged) for op in sources):
        return
    figures.violations.append(
        f"stale: {object_id} settled on a value older than an acknowledged write that began "
        "after it ended"
    )


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=90, help="seconds of load")
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=1, help="GATEWAY_REPLICAS")
    parser.add_argument("--workers", type=int, default=1, help="GATEWAY_WORKERS of each gateway")
    args = parser.parse_args(argv)
    figures = multisoak(
        args.duration, gateways=args.gateways, replicas=args.replicas, workers=args.workers
    )
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
