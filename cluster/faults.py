"""The fleet's fault policy: a pure function over a frozen status object (no Ray).

Each host is pending, running, done, lost (node or actor died, or silent past its
deadline) or failed (it answered with an error). The driver asks :func:`decide` after every
event and acts on the answer; tests call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

HOST_STATES = ("pending", "running", "done", "lost", "failed")


@dataclass(frozen=True)
class HostStatus:
    """What the driver knows about one host."""

    host: str
    state: str = "pending"
    started_s: float | None = None  # driver monotonic seconds
    deadline_s: float | None = None  # lost when silent past this
    last_seen_s: float | None = None
    reason: str | None = None  # why lost or failed

    def __post_init__(self) -> None:
        if self.state not in HOST_STATES:
            raise ValueError(f"unknown host state {self.state!r}")


@dataclass(frozen=True)
class FleetStatus:
    """Every host's status at one instant."""

    hosts: tuple[HostStatus, ...]
    now_s: float
    max_lost_fraction: float = 0.5  # abort when more than this share of hosts is lost or failed
    interrupted: bool = False

    def with_host(self, status: HostStatus) -> "FleetStatus":
        """A copy with one host's status replaced."""
        return replace(self, hosts=tuple(status if h.host == status.host else h for h in self.hosts))

    def count(self, *states: str) -> int:
        """How many hosts are in any of ``states``."""
        return sum(h.state in states for h in self.hosts)


@dataclass(frozen=True)
class Decision:
    """What the driver does next: continue, abort the rest, or finish; and the run_state."""

    action: str  # "continue" | "abort" | "finish"
    run_state: str | None = None  # set when action is abort or finish
    overdue: tuple[str, ...] = field(default_factory=tuple)  # hosts to declare lost now
    reason: str = ""


def decide(status: FleetStatus) -> Decision:
    """Continue, abort or finish, given every host's status (pure)."""
    overdue = tuple(h.host for h in status.hosts
                    if h.state == "running" and h.deadline_s is not None and status.now_s > h.deadline_s)
    n = len(status.hosts)
    bad = status.count("lost", "failed") + len(overdue)
    if status.interrupted:
        return Decision("abort", "aborted", overdue, "interrupted")
    if n and bad / n > status.max_lost_fraction:
        return Decision("abort", "aborted", overdue, f"{bad} of {n} hosts lost or failed")
    if status.count("pending", "running") - len(overdue) > 0:
        return Decision("continue", None, overdue)
    if bad == 0:
        return Decision("finish", "completed", overdue)
    return Decision("finish", "partial", overdue, f"{bad} of {n} hosts lost or failed")
