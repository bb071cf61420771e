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


def test_the_store_importing_the_http_layer_breaks_the_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = copy_of_the_project(tmp_path)
    add_import(project / "pgqueue/store/queries.py", "import pgqueue.http.app")
    assert check(project) == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out
    assert "pgqueue.store.queries -> pgqueue.http.app" in out


def test_a_driver_importing_the_runtime_breaks_the_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = copy_of_the_project(tmp_path)
    add_import(project / "adapters/psycopg.py", "import pgqueue.runtime.producer")
    assert check(project) == 1
    assert "pgqueue.adapters.psycopg -> pgqueue.runtime.producer" in capsys.readouterr().out


def test_a_circle_in_the_runtime_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = copy_of_the_project(tmp_path)
    add_import(project / "pgqueue/runtime/context.py", "import pgqueue.runtime.producer")
    assert check(project) == 1
    out = capsys.readouterr().out
    assert "import circle: " in out
    assert "pgqueue.runtime.context" in out and "pgqueue.runtime.producer" in out


def test_circles_are_the_components_of_more_than_one_module() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
