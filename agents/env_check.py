"""Can this node run the suite? Checked on every node before the run starts.

A node whose Ray was started from another Python (the system one, say) runs the job's
workers with that Python: without this check the first missing import surfaced as a
traceback in the middle of a run. The rule:

* every package the host's code imports is importable (the list below, by import name and
  distribution name);
* its version is at least the project's minimum (``pyproject.toml``);
* ``pyarrow`` and ``ray`` have the driver's major.minor (the host's artifacts travel to the
  driver as pickled Arrow tables through Ray's object store), and Python its major.minor;
* NVML finds a GPU, or ``FLEETPHYSICS_SIMULATE`` names known profiles: a node with neither
  has nothing to measure (skipped, not failed).

:func:`environment_problems` is pure; :func:`installed_versions` looks at this process.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

FIX = "start Ray on that node (`ray start`) with the project's environment on PATH (e.g. .venv/bin first)"

# import name -> (distribution name, minimum version): what agents/ and experiments/ import on a host.
HOST_PACKAGES = {
    "numpy": ("numpy", "1.24"),
    "pandas": ("pandas", "2.0"),
    "pyarrow": ("pyarrow", "14"),
    "pydantic": ("pydantic", "2.5"),
    "yaml": ("pyyaml", "6"),
    "psutil": ("psutil", "5.9"),
    "scipy": ("scipy", "1.10"),
    "ray": ("ray", "2.9"),
}
# What the job's driver itself imports (it runs where the entrypoint runs: the head).
DRIVER_PACKAGES = {"duckdb": ("duckdb", "2.0"), "pyarrow": ("pyarrow", "14"), "rich": ("rich", "13"),
                   "ray": ("ray", "2.9"), "pydantic": ("pydantic", "2.5"), "yaml": ("pyyaml", "6")}
GPU_PACKAGES = {"pynvml": ("nvidia-ml-py", "12.535"), "torch": ("torch", "2.1")}
SAME_AS_DRIVER = ("pyarrow", "ray", "python")


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _major_minor(version: str) -> tuple[int, ...]:
    return _release(version)[:2]


def installed_versions(packages: dict[str, tuple[str, str]] | None = None) -> dict[str, str | None]:
    """``{import name: version or None when it does not import}``, and ``python``."""
    found: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name, (dist, _) in (packages or HOST_PACKAGES).items():
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - any failure to import means the node cannot run it
            found[name] = None
            continue
        try:
            found[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[name] = getattr(sys.modules[name], "__version__", "unknown")
    return found


def environment_problems(node: dict[str, str | None], driver: dict[str, str | None],
                         packages: dict[str, tuple[str, str]] | None = None) -> list[str]:
    """What keeps a node (``installed_versions`` there) from running the driver's job (pure)."""
    problems = []
    for name, (dist, minimum) in (packages or HOST_PACKAGES).items():
        version = node.get(name)
        if version is None:
            problems.append(f"no module named {name!r} (pip install '{dist}>={minimum}')")
        elif _release(version) and _release(version) < _release(minimum):
            problems.append(f"{dist} {version} is older than {minimum}")
    for name in SAME_AS_DRIVER:
        mine, theirs = node.get(name), driver.get(name)
        if mine and theirs and _major_minor(mine) != _major_minor(theirs):
            problems.append(f"{name} {mine} where the driver has {theirs}")
    return problems
