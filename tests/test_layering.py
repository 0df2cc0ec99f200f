"""Who may import whom (the package table of the design, as the code keeps it).

The warehouse and the dashboard run where there is no GPU driver and no Ray worker (a laptop
with a copy of the warehouse, a CI runner), and the pure analyses are tested on recorded
traces: none of them may pull in device code. They may import our leaf modules, which
import nothing of ours, and the contracts (experiments/contracts: report models, table
schemas). agents/ is host-side sensing and imports nothing of experiments/ or cluster/;
the Ray actor classes that run experiments live in cluster/. No exceptions: an import
inside a function counts like one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"agents", "cluster", "dashboard", "experiments", "warehouse"}
LEAVES = {"agents.errors", "agents.host", "agents.trace_schema", "agents.cli_args", "agents.safe_text"}
CONTRACTS = {"experiments.contracts"}  # typed reports and table schemas: no runner code

# package folder -> (modules of ours it may import, third-party device libraries it may
# import); a name covers its submodules, and imports inside functions count. cluster/ is
# the orchestration layer and may import everything, so it has no rule.
ALLOWED = {
    "agents": ({"agents"}, {"pynvml", "torch"}),
    "experiments": ({"experiments", "agents"}, {"pynvml", "torch", "transformers"}),
    "experiments/analysis": ({"experiments.analysis"} | LEAVES, set()),
    "experiments/contracts": (CONTRACTS | LEAVES, set()),
    "warehouse": ({"warehouse"} | CONTRACTS | LEAVES, set()),
    "dashboard": ({"dashboard", "warehouse"} | CONTRACTS | LEAVES, set()),
}
DEVICE_LIBRARIES = {"ray", "torch", "pynvml", "transformers"}


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    # names bound to a string or f-string, for import_module(name) with the name in a variable
    texts = {n.targets[0].id: n.value for n in nodes if isinstance(n, ast.Assign) and len(n.targets) == 1
             and isinstance(n.targets[0], ast.Name) and isinstance(n.value, (ast.Constant, ast.JoinedStr))}
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and _dynamic_import(node.func) and node.args:
            module = _module_text(texts.get(node.args[0].id) if isinstance(node.args[0], ast.Name) else node.args[0])
            if module:
                found.append((node.lineno, module))
    return found


def _dynamic_import(func: ast.expr) -> bool:
    """importlib.import_module, import_module or __import__."""
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return name in ("import_module", "__import__")


def _module_text(node: ast.expr | None) -> str | None:
    """The module a literal names: a string, or an f-string's dotted names before its first field."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value).rsplit(".", 1)[0] or None
    return None


def _covered(module: str, allowed: set[str]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in allowed)


def _sources(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no sources under {folder}"
    return files


def _violations(folder: str, paths: list[Path]) -> list[str]:
    ours, libraries = ALLOWED[folder]
    wrong = []
    for path in paths:
        for line, module in _imports(path):
            top = module.split(".")[0]
            if (top in OURS and not _covered(module, ours)) or (top in DEVICE_LIBRARIES and top not in libraries):
                name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                wrong.append(f"{name}:{line} imports {module}")
    return wrong


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_a_package_imports_only_what_the_design_lets_it(folder):
    wrong = _violations(folder, _sources(folder))
    assert not wrong, "\n".join(wrong)


def test_leaf_modules_import_nothing_of_ours():
    for leaf in LEAVES:
        path = ROOT / (leaf.replace(".", "/") + ".py")
        ours = [f"{leaf}:{line} imports {m}" for line, m in _imports(path) if m.split(".")[0] in OURS]
        assert not ours, "\n".join(ours)


def test_the_checker_sees_a_planted_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ndef f():\n    from experiments.suite import HostRun\n    import ray\n"
                   "    from experiments.contracts.tables import TABLES\n")
    dynamic = tmp_path / "dynamic.py"
    dynamic.write_text("import importlib\n\ndef f(name):\n    module_name = f'experiments.analysis.{name}'\n"
                       "    importlib.import_module(module_name)\n    __import__('cluster.job')\n"
                       "    importlib.import_module(name)\n")
    assert _violations("warehouse", [dynamic]) == ["dynamic.py:5 imports experiments.analysis",
                                                   "dynamic.py:6 imports cluster.job"]
    assert _violations("agents", [bad]) == ["bad.py:4 imports experiments.suite", "bad.py:5 imports ray",
                                            "bad.py:6 imports experiments.contracts.tables"]
    assert _violations("warehouse", [bad]) == ["bad.py:4 imports experiments.suite", "bad.py:5 imports ray"]
    assert _violations("experiments", [bad]) == ["bad.py:5 imports ray"]
    assert _imports(bad, top_level_only=True) == [(1, "os")]
    assert not _covered("experiments.analysis.rle", ALLOWED["warehouse"][0])
    assert _covered("experiments.contracts.tables", ALLOWED["warehouse"][0])
