"""The layer check that ``make lint`` runs: it passes on the package, and it fails on a circle
and on an import across the layer contract (shown on a copy of the package)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.architecture.layers import ROOT, check, circles


def copy_of_the_project(dest: Path) -> Path:
    for folder in ("pgqueue", "adapters", "migrations"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def add_import(module: Path, line: str) -> None:
    module.write_text(module.read_text() + f"\n{line}  # noqa\n")


def test_the_package_has_no_circle_and_keeps_its_contracts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert check() == 0
    out = capsys.readouterr().out
    assert "no import circle" in out
    assert "0 broken" in out


BREAKS = [
    # (module, import added, what the check must print)
    ("pgqueue/store/queries.py", "import pgqueue.http.app",
     "pgqueue.store.queries -> pgqueue.http.app"),
    ("adapters/psycopg.py", "import pgqueue.runtime.producer",
     "pgqueue.adapters.psycopg -> pgqueue.runtime.producer"),
    ("pgqueue/runtime/context.py", "import pgqueue.runtime.producer", "import circle: "),
]  # fmt: skip


@pytest.mark.parametrize(
    ("module", "line", "reported"), BREAKS, ids=["store to http", "driver to runtime", "circle"]
)
def test_a_forbidden_import_or_a_circle_fails_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], module: str, line: str, reported: str
) -> None:
    project = copy_of_the_project(tmp_path)
    add_import(project / module, line)
    assert check(project) == 1
    out = capsys.readouterr().out
    assert reported in out
    assert "BROKEN" in out or "import circle: " in out


def test_circles_are_the_components_of_more_than_one_module() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
