"""The example cluster YAML and KubeRay manifest parse and carry what fleetphysics needs."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "cluster" / "deploy"


def test_ray_up_cluster_yaml():
    doc = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "head_start_ray_commands",
                "worker_start_ray_commands"):
        assert key in doc
    assert doc["head_node_type"] in doc["available_node_types"]
    assert any("ray start --head" in c for c in doc["head_start_ray_commands"])
    assert any("--address" in c for c in doc["worker_start_ray_commands"])


def test_kuberay_rayjob_manifest():
    doc = yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "cluster.job"]
    from cluster.job import build_parser

    args = build_parser().parse_args(argv[3:])  # the entrypoint's flags are the job's flags
    assert args.address == "auto" and args.preset == "quick"
    assert args.warehouse.startswith("/") and args.out.startswith("/")  # a Ray job refuses relative paths
    runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    assert "working_dir" in runtime_env
    workers = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert any(c["resources"]["limits"].get("nvidia.com/gpu") for w in workers for c in w["template"]["spec"]["containers"])
