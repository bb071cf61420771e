"""The ``pgqueue`` command reports an error in one line on stderr with a non-zero exit; the
traceback only with ``--debug``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import typer

from pgqueue import InvalidOptions
from pgqueue.cli import main as cli
from tests.conftest import Database


def pgqueue(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", *args],
        capture_output=True,
        text=True,
        env=env or {k: v for k, v in os.environ.items() if k != "PGQUEUE_DEBUG"},
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_bad_schema_is_one_line() -> None:
    result = pgqueue("sql", "--schema", "Bad-Name")
    assert result.returncode == 1
    assert one_line(result) == (
        "pgqueue: error: schema name must match ^[a-z_][a-z0-9_]{0,62}$ (a plain lower-case "
        "identifier), got 'Bad-Name'"
    )
    debug = pgqueue("--debug", "sql", "--schema", "Bad-Name")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("pgqueue: error: schema name must match")


def test_an_unknown_module_is_one_line() -> None:
    result = pgqueue("worker", "no_such_module_here:queue")
    assert result.returncode == 2
    assert one_line(result) == (
        "pgqueue: error: Invalid value: cannot import module 'no_such_module_here' for "
        "'no_such_module_here:queue': run the worker from the directory that holds it, or add "
        "that directory to PYTHONPATH (see: pgqueue worker --help)"
    )
    result = pgqueue("worker", "os:no_attribute")
    assert "os has no attribute 'no_attribute'" in one_line(result)


def test_a_wrong_dsn_is_one_line_with_the_servers_reason(db: Database) -> None:
    parts = urlsplit(db.dsn)
    wrong = urlunsplit(parts._replace(path="/no_such_db"))
    result = pgqueue("migrate", "--dsn", wrong, "--schema", db.schema)
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith("pgqueue: error: cannot connect to PostgreSQL (")
    assert 'database "no_such_db" does not exist' in line


def test_a_worker_on_an_unmigrated_schema_says_to_migrate(
    empty_schema: Database, tmp_path: Path
) -> None:
    env = {**empty_schema.env(), "RUN_LOG_DIR": str(tmp_path)}
    result = pgqueue("worker", "tests.acceptance.worker_app:queue", env=env)
    assert result.returncode == 1
    assert f"run `pgqueue migrate --schema {empty_schema.schema}`" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


@pytest.fixture
def extra_command() -> Iterator[None]:
    """A command another module registers on ``app``, as plug-ins do."""

    @cli.app.command("failing-extra")
    def failing_extra() -> None:
        raise InvalidOptions("the extra command failed; fix the extra")

    yield
    cli.app.registered_commands[:] = [
        c for c in cli.app.registered_commands if c.name != "failing-extra"
    ]


def test_commands_added_by_other_modules_get_the_same_handling(
    extra_command: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGQUEUE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["failing-extra"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "pgqueue: error: the extra command failed; fix the extra\n"
    with pytest.raises(SystemExit):
        cli.main(["--debug", "failing-extra"])
    assert "Traceback" in capsys.readouterr().err


def test_help_and_success_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sql", "--schema", "jobs"])
    assert exit_info.value.code == 0
    assert "CREATE TABLE jobs.tasks" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0


def test_migrations_copy_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = pgqueue("migrations", "copy", "--into", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "--head <your head>" in first.stdout
    again = pgqueue("migrations", "copy", "--into", str(tmp_path))  # identical: fine
    assert again.returncode == 0, again.stderr
    copied = tmp_path / "pgqueue_0001_initial.py"
    copied.write_text(copied.read_text() + "\n# edited\n")
    refused = pgqueue("migrations", "copy", "--into", str(tmp_path))
    assert refused.returncode == 1
    line = one_line(refused)
    assert line.startswith(f"pgqueue: error: {copied} already exist(s) and differ(s)")
    assert line.endswith("Pass --force to overwrite (after checking your changes to them)")
    assert copied.read_text().endswith("# edited\n")  # nothing was copied
    forced = pgqueue("migrations", "copy", "--into", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert not copied.read_text().endswith("# edited\n")


def test_typer_exit_codes_pass_through(capsys: pytest.CaptureFixture[str]) -> None:
    @cli.app.command("exit-three")
    def exit_three() -> None:
        raise typer.Exit(3)

    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["exit-three"])
        assert exit_info.value.code == 3
    finally:
        cli.app.registered_commands[:] = [
            c for c in cli.app.registered_commands if c.name != "exit-three"
        ]
