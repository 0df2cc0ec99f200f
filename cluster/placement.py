"""Connecting to Ray and placing one HostAgent per node (ray.remote is applied here).

Ray facts this module is written against (Ray 2.60): token authentication is on by
default, so a client needs the cluster's token (RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or
~/.ray/auth_token); we never turn it off. A plain local ``ray.init()`` binds the machine's
first interface; for the embedded default we keep everything on loopback.
"""

from __future__ import annotations

import os

from agents.errors import ConfigError, FleetPhysicsError

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


class PlacementError(FleetPhysicsError):
    """An agent could not be placed or did not start in time."""


def connect(address: str | None, num_cpus: int | None = None) -> dict:
    """Connect to a cluster (``address``) or start the embedded local one (None/'local').

    The local one is always a fresh Ray (``ray.init(address="local")``): a bare ``ray.init()``
    attaches to whatever ``/tmp/ray/ray_current_cluster`` names, a dead address left by a
    crashed Ray included. It listens on loopback only. Returns ``ray.cluster_resources()``.
    """
    local = address in (None, "", "local")
    if local:
        for k, v in LOOPBACK_ENV.items():  # read by Ray at import: set before importing it
            os.environ.setdefault(k, v)
    if not local:
        _probe(address)
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    try:
        if local:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {k: os.environ[k] for k in LOOPBACK_ENV}})
        else:
            ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        raise ConfigError(f"--address {address}: cannot reach a Ray cluster there ({_first_line(exc)}); "
                          "check `ray status` on the head node") from None
    except Exception as exc:  # noqa: BLE001 - Ray raises many types for auth and address errors
        text = str(exc)
        if "auth" in text.lower() or "token" in text.lower():
            raise ConfigError(f"--address {address}: the cluster wants its authentication token; set RAY_AUTH_TOKEN "
                              "(or copy ~/.ray/auth_token from the head node) with RAY_AUTH_MODE=token") from None
        raise ConfigError(f"--address {address}: cannot connect to Ray ({_first_line(exc)})") from None
    return ray.cluster_resources()


def _probe(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast on an unreachable host:port (ray.init would retry for minutes)."""
    import socket

    target = address.split("://", 1)[-1]
    if target == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--address {address}: cannot reach a Ray cluster there ({exc}); "
                          "check the address and that `ray start --head` runs") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def alive_nodes() -> list[dict]:
    """Alive Ray nodes: id, address, hostname and resources."""
    import ray

    return [{"node_id": n["NodeID"], "address": n["NodeManagerAddress"], "hostname": n.get("NodeManagerHostname"),
             "resources": n.get("Resources", {})}
            for n in ray.nodes() if n.get("Alive")]


def place_agent(node_id: str, **agent_kwargs):
    """A HostAgent actor pinned to ``node_id`` (hard affinity: it never drifts to another node)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from cluster.host_agent import HostAgent

    actor_cls = ray.remote(HostAgent).options(
        num_cpus=0,
        max_concurrency=4,  # status() and stop() answer while run() works
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        max_restarts=0,
    )
    return actor_cls.remote(worker_factory=device_worker_factory, **agent_kwargs)


def device_worker_factory(spec: dict, marker_path: str, out_dir: str, run_id: str):
    """A DeviceWorker actor (num_gpus=1) on the calling agent's node, behind a plain adapter."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from cluster.host_agent import DeviceWorker

    node_id = ray.get_runtime_context().get_node_id()
    handle = ray.remote(DeviceWorker).options(
        num_gpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        max_concurrency=2,
    ).remote(spec, marker_path, out_dir, run_id)
    return _ActorRunner(handle)


class _ActorRunner:
    """Calls a DeviceWorker actor synchronously, with timeouts (what HostRun expects)."""

    def __init__(self, handle, startup_timeout_s: float = 120.0) -> None:
        import ray

        self.handle = handle
        self._describe = ray.get(handle.describe.remote(), timeout=startup_timeout_s)

    def describe(self) -> dict:
        return self._describe

    def run_phase(self, name: str, config_json: dict) -> dict:
        import ray

        return ray.get(self.handle.run_phase.remote(name, config_json))

    def request_stop(self, reason: str = "interrupted") -> None:
        self.handle.request_stop.remote(reason)

    def close(self) -> None:
        import ray

        try:
            ray.get(self.handle.close.remote(), timeout=30)
        finally:
            ray.kill(self.handle)
