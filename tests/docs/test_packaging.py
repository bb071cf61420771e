"""The distribution name and extras the docs tell users to install are the ones we build."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import Database

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_install_lines_name_the_distribution_and_migrate_runs(
    empty_schema: Database,
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "pgqueue-tasks"
    extras = set(project["optional-dependencies"])
    installs = [
        match
        for page in DOCS
        for match in re.findall(r"pip install [\"']?([\w.-]+)(?:\[([\w,]+)\])?", page.read_text())
    ]
    assert installs
    for name, wanted in installs:
        assert name == "pgqueue-tasks", f"pip install {name}"
        assert set(filter(None, wanted.split(","))) <= extras, wanted
    required = " ".join(project["dependencies"])
    assert "alembic" not in required.lower() and "sqlalchemy" not in required.lower()
    assert "prometheus-client" in required
    migrate = subprocess.run(
        [sys.executable, "-m", "pgqueue", "migrate", "--dsn", empty_schema.dsn,
         "--schema", empty_schema.schema],
        capture_output=True, text=True,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr


def test_the_core_and_typed_tasks_import_no_web_framework() -> None:
    """``import pgqueue`` (typed tasks included) loads no FastAPI, Starlette or pydantic: the
    integrations import them, and only when they are used."""
    code = (
        "import sys, pgqueue, pgqueue.typed\n"
        "from pgqueue import Queue, KindOptions\n"
        "q = Queue('postgresql:///none')\n"
        "@q.task('k', KindOptions(attempt_timeout=1))\n"
        "def f(n: int) -> None: ...\n"
        "f.configure(key='a')\n"
        "web = ('fastapi', 'starlette', 'pydantic', 'django')\n"
        "print(sorted(m for m in web if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
