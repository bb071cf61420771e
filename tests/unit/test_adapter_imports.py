"""The driver modules never import each other: ``adapters/host.py`` decides which driver a
caller's transaction belongs to. (psycopg and asyncpg once imported each other inside
functions, a cycle that made each module's load order matter.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"
DRIVERS = ("psycopg", "asyncpg")


def adapter_imports(module: str) -> set[str]:
    """Sibling adapter modules ``module`` imports, at the top or inside functions."""
    tree = ast.parse((ADAPTERS / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.module and node.module.startswith("pgqueue.adapters."):
                found.add(node.module.split(".")[2])
    return found


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_driver_module_imports_no_other_driver_module(driver: str) -> None:
    others = set(DRIVERS) - {driver}
    imported = adapter_imports(driver)
    assert "host" in imported  # the neutral module: unwrapping and dispatch
    assert not imported & others, f"adapters/{driver}.py imports {imported & others}"


def test_host_imports_no_sibling_at_module_level() -> None:
    tree = ast.parse((ADAPTERS / "host.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 1]
    assert top == []


def test_host_dispatches_a_psycopg_transaction_and_unwraps_nothing_else() -> None:
    from pgqueue.adapters.host import describe_target, driver_connection, is_asyncpg

    sentinel = object()
    assert driver_connection(sentinel) is sentinel
    assert not is_asyncpg(sentinel)
    assert describe_target("host=db port=6432 dbname=app password=secret") == (
        "host=db port=6432 dbname=app"
    )
