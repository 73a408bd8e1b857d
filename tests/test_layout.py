"""The layout of ARCHITECTURE.md holds: one import root, every code folder packaged, none shadowing HF datasets, and
the layers imported only downwards, with no import cycle.

The layers, bottom to top (a module imports its own package and the layers below it, never above or beside):

    datasets (0) < pipelines (1) < annotators, training (2, siblings) < flows.sample_data, evaluation (3, siblings)
    < flows, benchmarks (4)

and inside training: model < data < the trainer and the policy (the model never reads the data path; the data path
never reaches the trainer).

The import graph is built from the source with `ast`, so imports inside functions and under `TYPE_CHECKING` count:
a lazy import hides a dependency from the interpreter at import time, not from the reader.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOP_LEVEL = ("datasets", "pipelines", "annotators", "training", "evaluation", "flows")
LAYERS = {
    "vlaforge.datasets": 0,
    "vlaforge.pipelines": 1,
    "vlaforge.annotators": 2,
    "vlaforge.training": 2,
    "vlaforge.flows.sample_data": 3,
    "vlaforge.evaluation": 3,
    "vlaforge.flows": 4,
    "benchmarks": 4,
}
"""Rank of each package; the longest matching prefix decides a module's package."""
INNER_LAYERS = {"vlaforge.training.model": 0, "vlaforge.training.data": 1, "vlaforge.training": 2}
"""Ranks inside one package: an import within it may not go up these."""


@dataclasses.dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line})"


def module_files(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Every module of the code folders and of benchmarks/, by dotted name."""
    modules = {}
    for top in TOP_LEVEL:
        for path in (root / top).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules["vlaforge." + ".".join(parts)] = path
    for path in (root / "benchmarks").glob("*.py"):
        modules[f"benchmarks.{path.stem}"] = path
    return modules


def import_edges(modules: dict[str, pathlib.Path]) -> list[Edge]:
    """Imports between our modules; `from package import name` counts as importing the module `name` if it is one."""
    edges = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, package):
                resolved = next((t for t in target if t in modules), None)
                if resolved is not None and resolved != name:
                    edges.append(Edge(name, resolved, node.lineno))
    return edges


def _targets(node: ast.AST, package: str) -> list[tuple[str, ...]]:
    """Candidate module names of one import statement, most specific first."""
    if isinstance(node, ast.Import):
        return [(alias.name, alias.name.rpartition(".")[0]) for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    return [(f"{base}.{alias.name}", base) for alias in node.names]


def package_of(module: str) -> str:
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)


def inner_rank(module: str) -> int:
    return max(((len(p), rank) for p, rank in INNER_LAYERS.items() if module == p or module.startswith(p + ".")),
               default=(0, 0))[1]


def layering_violations(edges: list[Edge]) -> list[Edge]:
    """Edges into a higher layer, into a sibling package of the same layer, or up the ranks inside a package."""
    bad = []
    for edge in edges:
        source, target = package_of(edge.source), package_of(edge.target)
        if source != target and LAYERS[target] >= LAYERS[source]:
            bad.append(edge)
        elif source == target and inner_rank(edge.target) > inner_rank(edge.source):
            bad.append(edge)
    return bad


def import_cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_imports_only_go_down_the_layers():
    bad = layering_violations(import_edges(module_files(ROOT)))
    assert not bad, "imports against the layering (see this file's docstring):\n" + "\n".join(map(str, bad))


def test_there_is_no_import_cycle():
    cycles = import_cycles(import_edges(module_files(ROOT)))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_catch_a_planted_violation_and_cycle(tmp_path):
    """The checker itself: an upward import hidden in a function, a sibling import under TYPE_CHECKING, and a cycle
    through a relative import are all reported; a downward import is not."""
    files = {
        "datasets/schema.py": "def f():\n    from vlaforge.pipelines.stage import Stage\n",
        "pipelines/stage.py": "from vlaforge.datasets import schema\n",
        "annotators/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vlaforge.training import t\n",
        "annotators/b.py": "from . import c\n",
        "annotators/c.py": "from vlaforge.annotators.b import x\n",
        "training/t.py": "",
        "training/model/m.py": "from vlaforge.training.data import d\n",
        "training/data/d.py": "from vlaforge.training.model import m as model\n",
        "flows/cli.py": "import vlaforge.flows.sample_data.corpus\n",
        "flows/sample_data/corpus.py": "from vlaforge.training import t\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    edges = import_edges(module_files(tmp_path))
    assert sorted(map(str, layering_violations(edges))) == [
        "vlaforge.annotators.a -> vlaforge.training.t (line 3)",
        "vlaforge.datasets.schema -> vlaforge.pipelines.stage (line 2)",
        "vlaforge.training.model.m -> vlaforge.training.data.d (line 1)",
    ]
    assert import_cycles(edges) == [
        ["vlaforge.annotators.b", "vlaforge.annotators.c"],
        ["vlaforge.datasets.schema", "vlaforge.pipelines.stage"],
        ["vlaforge.training.data.d", "vlaforge.training.model.m"],
    ]


def test_every_code_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for top in TOP_LEVEL:
        assert config["package-dir"][f"vlaforge.{top}"] == top
        for folder in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
            if folder.name == "__pycache__" or not any(folder.glob("*.py")):
                continue
            dotted = "vlaforge." + ".".join(folder.relative_to(ROOT).parts)
            assert dotted in listed, f"{folder} holds Python code but {dotted} is not in pyproject's packages"


def test_top_level_folders_are_namespace_portions():
    for top in TOP_LEVEL:
        assert not (ROOT / top / "__init__.py").exists(), f"{top}/__init__.py would shadow other packages"


def test_hugging_face_datasets_is_not_shadowed_from_the_repo_root():
    code = "import datasets, vlaforge.datasets.schema as s; print(datasets.__file__); print(s.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    hf, ours = out.splitlines()
    assert "site-packages" in hf and ours == str(ROOT / "datasets" / "schema.py")
