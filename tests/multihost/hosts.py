"""Several Docker hosts on one machine: a network namespace per host, one dockerd each.

Privileged containers (Docker-in-Docker) are not allowed on the CI machine; network namespaces
are. Each host is a namespace with a veth on one bridge and its own daemon (data root, exec root,
socket, pidfile, cgroup parent and bridge subnet of its own), so the daemons form a real
multi-host swarm whose overlay network carries traffic between hosts. Images are loaded into each
daemon (there is no registry). Everything made here is named ``amzmh*`` and lives in addresses
nothing else on the machine uses (10.251.0.0/24 between hosts, 10.252.<n>.0/24 inside each);
``teardown`` removes all of it, also after a failure, and also what an interrupted run left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker

PREFIX = "amzmh"
BRIDGE = f"{PREFIX}0"
SUBNET_PREFIX = "10.251.0"
BRIDGE_ADDRESS = f"{SUBNET_PREFIX}.1"
_FIREWALL_RULE = ["DOCKER-USER", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]


def _run(*command: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Host:
    """One Docker host: a network namespace and its daemon."""

    index: int
    _daemon: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.index}"

    @property
    def address(self) -> str:
        return f"{SUBNET_PREFIX}.{10 + self.index}"

    @property
    def socket(self) -> str:
        return f"unix:///run/{self.name}.sock"

    @property
    def data_root(self) -> Path:
        return Path(f"/var/lib/{self.name}")

    @property
    def exec_root(self) -> Path:
        return Path(f"/run/{self.name}")

    @property
    def pidfile(self) -> Path:
        return Path(f"/run/{self.name}.pid")

    @property
    def log(self) -> Path:
        return Path(f"/tmp/dockerd-{self.name}.log")

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.socket, timeout=60)

    def docker(self, *arguments: str, timeout: float = 120) -> str:
        return _run("docker", "-H", self.socket, *arguments, timeout=timeout)

    def create_namespace(self) -> None:
        _run("ip", "netns", "add", self.name)
        veth = f"{PREFIX}v{self.index}"
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", self.name)
        _run("ip", "link", "set", veth, "master", BRIDGE, "up")
        inside = ("ip", "netns", "exec", self.name)
        _run(*inside, "ip", "addr", "add", f"{self.address}/24", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")
        _run(*inside, "ip", "link", "set", "lo", "up")

    def start_daemon(self) -> None:
        """Start (or restart, keeping its data root) the host's dockerd; wait until it answers."""
        # nsenter, not `ip netns exec`: that remounts /sys, and dockerd then finds no cgroups.
        with self.log.open("ab") as log:
            self._daemon = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/var/run/netns/{self.name}",
                    "dockerd",
                    "--data-root",
                    str(self.data_root),
                    "--exec-root",
                    str(self.exec_root),
                    "-H",
                    self.socket,
                    "--pidfile",
                    str(self.pidfile),
                    "--cgroup-parent",
                    self.name,
                    "--bip",
                    f"10.252.{self.index}.1/24",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (
                subprocess.run(
                    ["docker", "-H", self.socket, "info"], capture_output=True, check=False
                ).returncode
                == 0
            ):
                return
            time.sleep(0.5)
        raise RuntimeError(f"dockerd of {self.name} did not start: {self.log.read_text()[-2000:]}")

    def load_images(self, archive: Path) -> None:
        with archive.open("rb") as images:
            subprocess.run(
                ["docker", "-H", self.socket, "load", "-q"],
                stdin=images,
                capture_output=True,
                check=True,
                timeout=600,
            )

    def kill(self) -> None:
        """The host dies: its daemon and everything it ran stop at once (SIGKILL), its volumes
        stay on disk."""
        self._kill_daemon()
        self._kill_container_processes()

    def _daemon_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _kill_daemon(self) -> None:
        pid = self._daemon_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._daemon is not None:
            # nsenter exec()s dockerd: this is the daemon's own process, reaped here.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._daemon.wait(timeout=30)
            self._daemon = None
        elif pid is not None:  # a daemon an earlier run started: not ours to reap
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.2)
        # containerd and the shims, started by this dockerd, outlive it.
        for process in _processes_with(str(self.exec_root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        # A restarted dockerd would take the killed containerd (until reaped, a zombie) for alive
        # and wait for it.
        (self.exec_root / "containerd" / "containerd.pid").unlink(missing_ok=True)

    def _kill_container_processes(self) -> None:
        for tasks in Path("/sys/fs/cgroup").glob(f"*/{self.name}/**/cgroup.procs"):
            for line in tasks.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(line), signal.SIGKILL)

    def remove(self) -> None:
        """Remove everything this host made: the swarm it was in goes with it, so its daemon and
        containers are killed outright rather than stopped one by one."""
        self.kill()
        time.sleep(0.5)
        for root in (self.exec_root, self.data_root):
            _unmount_below(root)
        _run("ip", "netns", "del", self.name, check=False)
        _run("ip", "link", "del", f"{PREFIX}v{self.index}", check=False)
        for root in (self.exec_root, self.data_root):
            _run("rm", "-rf", str(root), check=False, timeout=300)
        for directory in sorted(
            Path("/sys/fs/cgroup").glob(f"*/{self.name}/**/"), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        for directory in Path("/sys/fs/cgroup").glob(f"*/{self.name}"):
            with contextlib.suppress(OSError):
                directory.rmdir()
        Path(f"/run/{self.name}.sock").unlink(missing_ok=True)
        self.log.unlink(missing_ok=True)


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(entry.name))
    return found


def _unmount_below(root: Path) -> None:
    prefix = f"{root}/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mountpoint in sorted(
        (m for m in mounts if m == str(root) or m.startswith(prefix)), key=len, reverse=True
    ):
        _run("umount", "-l", mountpoint, check=False)


def create_bridge() -> None:
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # The machine's FORWARD policy is DROP (Docker sets it); traffic between the hosts must pass.
    _run("iptables", "-I", *_FIREWALL_RULE)


def remove_bridge() -> None:
    removed = subprocess.run(["iptables", "-D", *_FIREWALL_RULE], capture_output=True, check=False)
    while removed.returncode == 0:  # inserted once per run; an interrupted run may have left more
        removed = subprocess.run(
            ["iptables", "-D", *_FIREWALL_RULE], capture_output=True, check=False
        )
    _run("ip", "link", "del", BRIDGE, check=False)


def remove_leftovers(count: int = 4) -> None:
    """What an interrupted earlier run left: hosts, the bridge, the firewall rule."""
    for index in range(1, count + 1):
        Host(index).remove()
    remove_bridge()
