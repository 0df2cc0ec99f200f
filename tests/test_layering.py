"""Who may import whom (the package table of the design, as the code keeps it).

The warehouse and the dashboard run where there is no GPU driver and no Ray worker (a laptop
with a copy of the warehouse, a CI runner), and the pure analyses are tested on recorded
traces: none of them may pull in device code. They may import our leaf modules, which
import nothing of ours.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"agents", "cluster", "dashboard", "experiments", "warehouse"}
LEAVES = {"agents.errors", "agents.host", "agents.trace_schema", "agents.cli_args", "agents.safe_text"}
DEVICE_LIBRARIES = {"ray", "torch", "pynvml", "transformers"}

# package folder -> modules of ours it may import (a name covers its submodules)
ALLOWED = {
    "experiments/analysis": {"experiments.analysis"} | LEAVES,
    "warehouse": {"warehouse", "experiments.analysis", "experiments.reports", "experiments.contracts"} | LEAVES,
    "dashboard": {"dashboard", "warehouse"} | LEAVES,
}


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _covered(module: str, allowed: set[str]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in allowed)


def _sources(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no sources under {folder}"
    return files


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_a_package_imports_only_what_the_design_lets_it(folder):
    wrong = []
    for path in _sources(folder):
        for line, module in _imports(path):
            top = module.split(".")[0]
            ours_not_allowed = top in OURS and not _covered(module, ALLOWED[folder])
            if ours_not_allowed or top in DEVICE_LIBRARIES:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_leaf_modules_import_nothing_of_ours():
    for leaf in LEAVES:
        path = ROOT / (leaf.replace(".", "/") + ".py")
        ours = [f"{leaf}:{line} imports {m}" for line, m in _imports(path) if m.split(".")[0] in OURS]
        assert not ours, "\n".join(ours)


def test_the_device_layer_does_not_depend_on_experiments_at_import():
    # HostAgent runs the suite, so it imports experiments inside its methods; at module level
    # agents/ imports nothing but itself, and a worker can load a backend alone.
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in _sources("agents")
             for line, module in _imports(path, top_level_only=True)
             if module.split(".")[0] in OURS - {"agents"}]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ndef f():\n    from agents.nvml import NvmlDevice\n    import torch.cuda\n")
    found = _imports(bad)
    assert (4, "agents.nvml") in found and (5, "torch.cuda") in found
    assert not _covered("agents.nvml", ALLOWED["warehouse"])
    assert _covered("experiments.analysis.rle", ALLOWED["warehouse"])
    assert _imports(bad, top_level_only=True) == [(1, "os")]
