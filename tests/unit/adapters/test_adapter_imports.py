"""The driver modules never import each other, and ``adapters/host.py`` (what they share)
imports none of them: ``adapters/transactions.py`` alone knows both drivers. (psycopg and
asyncpg once imported each other inside functions, and host imported both: import circles that
made each module's load order matter.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ADAPTERS = Path(__file__).resolve().parents[3] / "adapters"
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
    assert "host" in imported  # the neutral module: unwrapping SQLAlchemy, describing DSNs
    assert "transactions" not in imported
    assert not imported & others, f"adapters/{driver}.py imports {imported & others}"


def test_host_imports_no_sibling_at_all() -> None:
    assert adapter_imports("host") == set()


def test_transactions_is_the_one_module_that_knows_both_drivers() -> None:
    assert set(DRIVERS) <= adapter_imports("transactions")
    for module in ("host", "sqlalchemy", "failfast"):
        assert not set(DRIVERS) <= adapter_imports(module), module


def test_host_dispatches_a_psycopg_transaction_and_unwraps_nothing_else() -> None:
    from pgqueue.adapters.host import describe_target, driver_connection, is_asyncpg

    sentinel = object()
    assert driver_connection(sentinel) is sentinel
    assert not is_asyncpg(sentinel)
    assert describe_target("host=db port=6432 dbname=app password=secret") == (
        "host=db port=6432 dbname=app"
    )
