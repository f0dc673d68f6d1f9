"""The package import graph follows docs' layering (DESIGN.md): cli -> (report, analysis,
serving, runs) -> (engines, energy, workloads, models) -> (records, spec, store) -> errors.
Every import counts, also those inside functions (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import tokenjoule

SRC = Path(tokenjoule.__file__).parent
LAYERS = {
    "cli": 0, "api": 0,  # api: the Python entry points, beside the CLI (it never imports cli)
    "report": 1, "analysis": 1, "serving": 1, "runs": 1,
    "engines": 2, "energy": 2, "workloads": 2, "models": 2, "reference": 2,
    "records": 3, "spec": 3, "store": 3,
    "errors": 4, "limits": 4, "paths": 4, "safe_yaml": 4, "codeversion": 4,
    "": 4,  # "" is the tokenjoule package itself (__version__)
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_edges() -> set[tuple[str, str, str]]:
    """(importing package, imported package, importing module) for every tokenjoule import."""
    edges = set()
    for path in SRC.rglob("*.py"):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target == "tokenjoule" or target.startswith("tokenjoule."):
                    src, dst = _package(module), _package(target)
                    if src != dst:
                        edges.add((src, dst, module))
    return edges


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages <= set(LAYERS), f"add to LAYERS: {sorted(packages - set(LAYERS))}"


def test_no_package_imports_one_above_it():
    upward = sorted(f"{m} imports tokenjoule.{dst}" for src, dst, m in import_edges() if LAYERS[dst] < LAYERS[src])
    assert upward == []


def test_named_boundaries():
    edges = {(src, dst) for src, dst, _ in import_edges()}
    assert ("serving", "runs") not in edges
    assert ("engines", "serving") not in edges
    assert not any(dst == "cli" for _, dst in edges)


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for src, dst, _ in import_edges():
        graph.setdefault(src, set()).add(dst)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cyclic = sorted(p for p in graph if reaches(p, p, {p}))
    assert cyclic == []


def test_no_module_level_cycle_inside_runs():
    """runs' modules import each other only one way at module level (sweep and its runner
    used to import each other)."""
    graph: dict[str, set[str]] = {}
    for path in (SRC / "runs").glob("*.py"):
        module = _module_name(path)
        for node in ast.parse(path.read_text()).body:  # top-level statements only
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tokenjoule.runs."):
                graph.setdefault(module, set()).add(node.module)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert sorted(m for m in graph if reaches(m, m, {m})) == []


def test_rich_only_under_cli():
    users = set()
    for path in SRC.rglob("*.py"):
        if "cli" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n == "rich" or n.startswith("rich.") for n in names):
                users.add(_module_name(path))
    assert users == set()
