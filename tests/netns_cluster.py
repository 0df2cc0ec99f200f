"""A Ray cluster of separate "machines" on this one: a network, mount and UTS namespace each.

Each node gets its own network namespace (a veth pair into a bridge that lives in a
namespace of its own, so nothing touches the host's network), its own private /tmp/ray
(a bind mount in a mount namespace of its own, as separate machines have) and a hostname
of its own choosing (a UTS namespace: every node may share one). Only private addresses
that exist inside these namespaces are used. Cleanup kills, by PID, every process in the
namespaces and deletes them, whatever happened before.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SUBNET = "10.213.0"


def why_no_namespaces() -> str | None:
    """None when network namespaces can be made here, else why not (the skip reason)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    for tool in ("ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"no `{tool}` on PATH (apt-get install -y iproute2 util-linux)"
    probe = f"fpprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsCluster:
    """Ray nodes, each in its own namespaces; use as a context manager (cleanup on exit)."""

    def __init__(self, root: Path, hostname: str, env: dict[str, str]) -> None:
        self.root, self.hostname, self.env = root, hostname, env
        self.tag = f"fp{os.getpid() % 100000}"
        self.bridge_ns = f"{self.tag}br"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.ray_dirs: list[Path] = []

    def __enter__(self) -> "NetnsCluster":
        _ip("netns", "add", self.bridge_ns)
        self.namespaces.append(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        self.made_tmp_ray = not os.path.isdir("/tmp/ray")
        os.makedirs("/tmp/ray", exist_ok=True)  # the mount point each node's private /tmp/ray covers
        return self

    def address(self, k: int) -> str:
        """Node k's address (node 0 is the head)."""
        return f"{SUBNET}.{k + 1}"

    def start_node(self, k: int, ray_args: list[str], env: dict[str, str] | None = None) -> None:
        """Node k: its namespaces, its network and `ray start --block` inside them."""
        ns = f"{self.tag}n{k}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{k}", "netns", self.bridge_ns)
        _ip("-n", ns, "addr", "add", f"{self.address(k)}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", self.bridge_ns, "link", "set", f"p{k}", "master", "br0")
        _ip("-n", self.bridge_ns, "link", "set", f"p{k}", "up")
        ray_dir = self.root / f"node{k}-tmp-ray"
        ray_dir.mkdir(parents=True)
        self.ray_dirs.append(ray_dir)
        log = open(self.root / f"node{k}.log", "w")
        script = f'hostname {self.hostname} && mount --bind {ray_dir} /tmp/ray && exec "$@"'
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--uts", "--mount", "--propagation", "private", "--",
             "sh", "-c", script, "sh", "ray", "start", "--block", f"--node-ip-address={self.address(k)}", *ray_args],
            env=dict(self.env, **(env or {})), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def run_in(self, k: int, cmd: list[str], **kwargs) -> subprocess.Popen:
        """Start ``cmd`` inside node k's namespaces (network, mount, hostname)."""
        return subprocess.Popen(["nsenter", "-t", str(self.procs[k].pid), "-n", "-m", "-u", "--", *cmd],
                                env=self.env, **kwargs)

    def pids(self, k: int) -> list[int]:
        """Every process in node k's network namespace."""
        out = subprocess.run(["ip", "netns", "pids", self.namespaces[k + 1]], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill_node(self, k: int) -> int:
        """SIGKILL every process of node k, as a machine that loses power; how many."""
        pids = self.pids(k)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def logs(self) -> str:
        """The tail of each node's `ray start` output and raylet log (for a failure message)."""
        parts = []
        for k, ray_dir in enumerate(self.ray_dirs):
            log = self.root / f"node{k}.log"
            parts.append(f"--- node {k} ray start:\n" + (log.read_text()[-1500:] if log.exists() else ""))
            for name in ("raylet.out", "gcs_server.out"):
                for f in sorted(ray_dir.glob(f"session_*/logs/{name}"))[-1:]:
                    parts.append(f"--- node {k} {name}:\n" + f.read_text(errors="replace")[-1500:])
        return "\n".join(parts)

    def __exit__(self, *exc) -> None:
        for k in range(len(self.namespaces) - 1):
            self.kill_node(k)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 30
        for ns in reversed(self.namespaces):
            while subprocess.run(["ip", "netns", "del", ns], capture_output=True).returncode != 0:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        if self.made_tmp_ray:
            try:
                os.rmdir("/tmp/ray")
            except OSError:  # a Ray of the host's own started meanwhile: it is its now
                pass
