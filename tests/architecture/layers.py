"""The layer check of ``make lint``: no import circle among pgqueue's modules, and the
import-linter contracts of ``pyproject.toml``.

``adapters/`` and ``migrations/`` live at the top of the repository but ship as
``pgqueue.adapters`` and ``pgqueue.migrations``. The import graph must see them where they
ship, so the check first lays the package out as the wheel does, in a scratch folder, and
reads the graph from there.

Run: ``python -m tests.architecture.layers`` (exit 1 on a circle or a broken contract).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "pgqueue"
MAPPED = {"adapters": "adapters", "migrations": "migrations"}  # pgqueue.<name> <- <folder>


def stage(source: Path, dest: Path) -> Path:
    """Copy the package into ``dest`` as the wheel lays it out; returns ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(source / PACKAGE, dest / PACKAGE, ignore=ignore)
    for name, folder in MAPPED.items():
        shutil.copytree(source / folder, dest / PACKAGE / name, ignore=ignore)
    return dest


def import_graph(staged: Path) -> dict[str, set[str]]:
    """``module -> modules it imports directly`` within the package (grimp, in a subprocess so
    the staged copy is the only ``pgqueue`` it can see)."""
    script = (
        "import grimp, json, sys\n"
        f"graph = grimp.build_graph({PACKAGE!r}, cache_dir=None)\n"
        "print(json.dumps({m: sorted(graph.find_modules_directly_imported_by(m))"
        " for m in graph.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=staged,
        env={"PYTHONPATH": str(staged), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    import json

    return {module: set(imported) for module, imported in json.loads(out).items()}


def circles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def lint_imports(staged: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """import-linter's ``lint-imports`` over the staged package with ``config``."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--config", str(config)],
        cwd=staged,
        env={"PYTHONPATH": str(staged), "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )


def check(source: Path = ROOT) -> int:
    """Stage ``source``, print the import circles and the contracts; 0 when both are clean."""
    with tempfile.TemporaryDirectory(prefix="pgqueue-layers-") as scratch:
        staged = stage(source, Path(scratch))
        graph = import_graph(staged)
        found = circles(graph)
        print(f"import graph: {len(graph)} modules, {sum(map(len, graph.values()))} imports")
        for component in found:
            print("import circle: " + " <-> ".join(component))
        if not found:
            print("no import circle")
        result = lint_imports(staged, source / "pyproject.toml")
        print(result.stdout.strip() or result.stderr.strip())
        return 1 if found or result.returncode else 0


if __name__ == "__main__":
    sys.exit(check())
