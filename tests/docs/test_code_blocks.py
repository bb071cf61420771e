"""Every code block in README.md and docs/*.md runs, or names the test that runs its equivalent.

Conventions, for whoever writes docs:

- A ``python`` block is executed as written, alone (a reader copies one block, so each imports
  what it uses), against a fresh database of its own: ``pgqueue migrate`` applied to the default
  schema, plus the ``users`` and ``orders`` tables the examples write to. The placeholder DSN
  ``postgresql://app@db/app`` is replaced by that database's DSN, nothing else is changed.
- A block that cannot run here as written (a shell command, a fragment of a host's ``env.py``)
  is preceded by ``<!-- docs-test: equivalent tests/FILE.py::test_name -->``: that test runs
  the same thing; this test checks that it exists.
- ``text`` blocks are diagrams and sample output, not code.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import pgqueue.migrate

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER_DSN = "postgresql://app@db/app"
NOT_CODE = {"text"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")
_MARKER = re.compile(r"<!-- docs-test: equivalent (?P<path>tests/[\w/]+\.py)::(?P<test>\w+) -->")

EXAMPLE_TABLES = """
CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL,
                     total numeric(10, 2) NOT NULL)
"""


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    marker: re.Match[str] | None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the marker line above each, if any."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        start, indent = index, opening.group("indent")
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][len(indent) :] if lines[index].startswith(indent) else "")
            index += 1
        above = next((line for line in reversed(lines[:start]) if line.strip()), "")
        found.append(
            Block(
                page,
                start + 1,
                opening.group("lang") or "text",
                textwrap.dedent("\n".join(body)) + "\n",
                _MARKER.search(above),
            )
        )
        index += 1
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
RUNNABLE = [b for b in ALL_BLOCKS if b.lang == "python" and b.marker is None]
EQUIVALENT = [b for b in ALL_BLOCKS if b.marker is not None]


def test_the_pages_have_blocks_and_each_is_run_or_has_a_tested_equivalent() -> None:
    assert len(RUNNABLE) >= 8
    for block in ALL_BLOCKS:
        if block.lang in NOT_CODE or block.lang == "python":
            continue
        assert block.marker is not None, (
            f"{block.name}: a {block.lang} block needs <!-- docs-test: equivalent "
            "tests/FILE.py::test_name --> on the line above it"
        )


@pytest.mark.parametrize("block", EQUIVALENT, ids=lambda b: b.name)
def test_each_equivalent_test_exists(block: Block) -> None:
    assert block.marker is not None
    path = ROOT / block.marker.group("path")
    assert path.exists(), f"{block.name}: {path} does not exist"
    test = block.marker.group("test")
    assert re.search(rf"^(async )?def {test}\(", path.read_text(), re.MULTILINE), (
        f"{block.name}: {block.marker.group('path')} has no {test}"
    )


@pytest.fixture(scope="module")
def docs_dsn(server_dsn: str) -> Iterator[str]:
    """A database of its own (the examples use the default ``pgqueue`` schema), migrated."""
    name = f"docs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = urlunsplit(urlsplit(server_dsn)._replace(path="/" + name))
    try:
        pgqueue.migrate.upgrade(dsn)
        yield dsn
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def example_tables(docs_dsn: str) -> Iterator[str]:
    with psycopg.connect(docs_dsn, autocommit=True) as conn:
        conn.execute(EXAMPLE_TABLES)
    yield docs_dsn
    with psycopg.connect(docs_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE users, orders")
        conn.execute("TRUNCATE pgqueue.tasks, pgqueue.kinds")


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.name)
def test_python_block_runs(block: Block, example_tables: str, tmp_path: Path) -> None:
    """Run as a reader would: a fresh interpreter, outside the repository's directory."""
    script = tmp_path / "block.py"
    script.write_text(block.code.replace(PLACEHOLDER_DSN, example_tables))
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, f"{block.name} failed:\n{result.stderr}"


def test_the_documented_env_py_lines_are_the_tested_ones() -> None:
    from tests.integration import test_host_alembic

    migrations = [b for b in ALL_BLOCKS if b.page.name == "migrations.md" and b.marker]
    env_blocks = [b for b in migrations if "include_object=include_object" in b.code]
    assert env_blocks, "docs/migrations.md shows the env.py lines"
    tested = {line.strip() for line in test_host_alembic.ENV_PY_CONFIGURE.splitlines()}
    for line in env_blocks[0].code.splitlines():
        if line.strip().startswith(("include_schemas", "include_object=")):
            assert line.strip() in tested, line
