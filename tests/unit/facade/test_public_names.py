"""Every public name and documented module path still resolves after the package was laid out
by layer: the top-level names, the adapters, the testing helpers, the migrations and the CLI."""

from __future__ import annotations

import importlib
from importlib import resources

import pytest

import pgqueue

TOP_LEVEL = [
    "AsyncQueue", "AsyncQueueTask", "AttemptTimeout", "CapacityExceeded", "DatabaseUnavailable",
    "Decision", "Delayer", "Envelope", "ExpBackoffDelayer", "InvalidOptions", "InvalidResult",
    "InvalidTask", "Invoker", "Jitter", "JitterDelayer", "KindInfo", "KindOptions", "LoopOptions",
    "MustCancelTask", "NotInTransaction", "PgQueueError", "Queue", "QueueClosed", "QueueTask",
    "QueueState", "SchemaNotMigrated", "Snooze", "Stamp", "Status", "StopMode", "Task", "TaskInfo",
    "ThroughputPoint", "UnknownKind", "UnknownTask", "WaitTimeout", "Workflow", "InvalidWorkflow",
    "Node",
]  # fmt: skip

MODULE_NAMES = {
    "pgqueue.adapters.psycopg": [
        "PsycopgExecutor", "AsyncPsycopgExecutor", "sync_fetcher", "async_fetcher",
        "unavailable", "probe", "require_transaction", "run_in_psycopg", "keepalive_options",
    ],
    "pgqueue.adapters.asyncpg": [
        "AsyncpgExecutor", "unavailable", "array_params", "convert", "is_asyncpg_connection",
        "set_keepalives",
    ],
    "pgqueue.adapters.sqlalchemy": ["SqlAlchemyExecutor", "AsyncSqlAlchemyExecutor"],
    "pgqueue.adapters.failfast": ["AsyncFailFastExecutor", "FailFastExecutor"],
    "pgqueue.adapters.replica": [
        "Replica", "ReplicaRouter", "AsyncReplicaExecutor", "ReplicaExecutor",
    ],
    "pgqueue.adapters.shards": [
        "ShardUnavailable", "WrongShard", "slot_of", "global_task_id", "split_task_id",
        "SlotMap", "AsyncShardedQueue", "ShardedQueue",
    ],
    "pgqueue.adapters.fastapi": ["QueueDependency", "drain", "get_queue", "lifespan", "mount"],
    "pgqueue.adapters.host": ["describe_target", "driver_connection", "is_asyncpg"],
    # run_in_sync, run_in_async and async_fetcher left host for the module that knows both
    # drivers (host imported both of them: an import circle).
    "pgqueue.adapters.transactions": ["run_in_sync", "run_in_async", "async_fetcher"],
    "pgqueue.testing": [
        "ANY_PAYLOAD", "DrainedTask", "PushedTask", "assert_not_pushed", "assert_pushed", "drain",
    ],
    "pgqueue.migrate": ["upgrade", "downgrade", "migrations_dir", "plain_sql"],
    "pgqueue.logcontext": ["configure_logging"],
    "pgqueue.metrics": ["instrument", "serve"],
    "pgqueue.stamps": ["logging_stamp", "tracing_stamp"],
    "pgqueue.http": ["create_app", "HttpSettings", "Role", "require_role"],
    "pgqueue.embedded": ["start_embedded"],
    "pgqueue.workflow": ["Workflow", "Node", "InvalidWorkflow", "MAX_WORKFLOW_NODES"],
    "pgqueue.runtime": ["Runtime", "StopMode"],
}  # fmt: skip

CLI_COMMANDS = [
    ["status"], ["worker"], ["migrate"], ["sql"], ["serve"], ["migrations", "copy"],
    ["tasks", "list"], ["tasks", "show"], ["tasks", "cancel"], ["tasks", "retry"],
    ["kinds", "list"], ["kinds", "pause"], ["kinds", "resume"], ["kinds", "limit"], ["audit"],
]  # fmt: skip


def test_every_top_level_name_resolves() -> None:
    assert set(TOP_LEVEL) <= set(pgqueue.__all__)
    for name in TOP_LEVEL:
        assert getattr(pgqueue, name) is not None


@pytest.mark.parametrize("module", sorted(MODULE_NAMES))
def test_every_documented_module_path_resolves(module: str) -> None:
    loaded = importlib.import_module(module)
    missing = [name for name in MODULE_NAMES[module] if not hasattr(loaded, name)]
    assert missing == []


def test_the_migrations_ship_inside_the_package() -> None:
    migrations = resources.files("pgqueue.migrations")
    assert migrations.joinpath("env.py").is_file()
    revisions = [p.name for p in migrations.joinpath("versions").iterdir()]
    assert "pgqueue_0001_initial.py" in revisions
    assert resources.files("pgqueue").joinpath("grafana", "pgqueue-dashboard.json").is_file()


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=" ".join)
def test_every_cli_command_resolves(command: list[str]) -> None:
    import typer.main

    from pgqueue.cli.main import app

    group = typer.main.get_command(app)
    for word in command:
        children = getattr(group, "commands", None)
        assert children is not None, f"{word!r} under a command that has no children"
        assert word in children, f"no command {' '.join(command)!r}"
        group = children[word]


def test_importing_pgqueue_loads_no_driver() -> None:
    """The drivers load when a queue first uses them: ``import pgqueue`` stays cheap, and the
    core never imports a driver."""
    import subprocess
    import sys

    script = (
        "import sys, pgqueue, pgqueue.testing, pgqueue.store.operations;"
        " print(sorted({'psycopg', 'psycopg_pool', 'asyncpg', 'sqlalchemy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
