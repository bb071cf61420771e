"""Runs ``pgqueue worker`` processes against a test-owned cluster, injects faults, and checks
what every chaos scenario must hold at the end:

- lost: tasks that never reached a final state (``succeeded``/``cancelled``, or
  ``no_attempts_left`` with no claim left);
- extra runs: attempts that started (as the handlers logged) beyond the attempts the database
  recorded;
- overlaps: two attempts of one task running at the same time (handler start/end times; an
  attempt of a killed process ends when the process was killed);
- loops dead: a surviving worker that no longer picks up new tasks, or whose loop crashed.

Each scenario prints its figures: tasks, lost, overlaps, extra runs, time to recover.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgqueue import KindOptions, Queue, Task
from tests.conftest import Database

ROOT = Path(__file__).resolve().parents[2]
# Final: succeeded or cancelled, or out of attempts and no longer leased (a last attempt whose
# process died keeps its token, but its lease ends and nothing may claim it again).
FINISHED = (
    "status IN ('succeeded', 'cancelled')"
    " OR (status = 'no_attempts_left' AND (claim_token IS NULL OR delayed_till <= now()))"
)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path
    killed_at: float | None = None  # wall clock, for attempts cut short by SIGKILL

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Chaos:
    db: Database
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, **env: str) -> Worker:
        log = self.log_dir / f"worker-{len(self.workers)}.stderr"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "pgqueue.cli", "worker", "tests.chaos.chaos_app:queue"],
                cwd=ROOT,
                env={**self.db.env(), "RUN_LOG_DIR": str(self.log_dir), **self.env, **env},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        worker = Worker(process, log)
        self.workers.append(worker)
        return worker

    def kill(self, worker: Worker, sig: int = signal.SIGKILL) -> None:
        worker.process.send_signal(sig)
        if sig == signal.SIGKILL:
            worker.killed_at = time.time()
        worker.process.wait(timeout=120)

    def push(
        self, count: int, payload: Any = None, dsn: str | None = None, attempts: int = 0
    ) -> list[int]:
        with Queue(dsn or self.db.dsn, schema=self.db.schema) as producer:
            attempts = attempts or int(self.env.get("MAX_ATTEMPTS", "10"))
            producer.declare_kind("k", KindOptions(attempt_timeout=1, max_attempts=attempts))
            ids = producer.push_tasks([Task("k", payload) for _ in range(count)])
        return [i for i in ids if i is not None]

    def count(self, where: str) -> int:
        return int(self.db.scalar(f"SELECT count(*) FROM {{schema}}.tasks WHERE {where}"))

    def wait_finished(self, timeout: float, ids: list[int] | None = None) -> float:
        """Wait until every task (or those ``ids``) is final; the seconds it took."""
        began = time.monotonic()
        where = f"NOT ({FINISHED})"
        if ids is not None:
            where += f" AND id = ANY('{{{','.join(map(str, ids))}}}'::bigint[])"
        while self.count(where):
            if time.monotonic() - began > timeout:
                break
            time.sleep(0.1)
        return time.monotonic() - began

    def wait_until(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def runs(self) -> dict[int, list[tuple[int, float, float]]]:
        """Per task: (attempt, start, end) of every attempt the handlers logged."""
        killed = {w.process.pid: w.killed_at for w in self.workers}
        runs: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
        for path in self.log_dir.glob("runs-*.log"):
            pid = int(path.stem.removeprefix("runs-"))
            started: dict[tuple[int, int], float] = {}
            for line in path.read_text().splitlines():
                what, task, attempt, at = line.split()
                key = (int(task), int(attempt))
                if what == "start":
                    started[key] = float(at)
                elif key in started:
                    runs[key[0]].append((key[1], started.pop(key), float(at)))
            for (task, attempt), start in started.items():  # never ended: cut short
                end = killed.get(pid) or time.time()
                runs[task].append((attempt, start, end))
        return runs

    def check(
        self,
        name: str,
        *,
        recovery: float,
        allow_extra: int = 0,
        probe: bool = True,
    ) -> dict[str, Any]:
        """Check the end state, print the figures, stop the surviving workers."""
        alive = [w for w in self.workers if w.process.poll() is None]
        for worker in alive:  # a worker started late has its signal handlers in place
            self.wait_until(lambda w=worker: "worker started" in w.stderr, 30, "a worker start")
        probe_ok = True
        if probe and alive:
            ids = self.push(10, "probe")
            probe_ok = self.wait_finished(60, ids) < 60
        for worker in alive:
            self.kill(worker, signal.SIGTERM)
        lost = self.count(f"NOT ({FINISHED})")
        tasks = self.count("true")
        recorded = dict(self.db.fetch("SELECT id, attempts_elapsed FROM {schema}.tasks"))
        runs = self.runs()
        extra = sum(max(0, len(r) - recorded.get(task, 0)) for task, r in runs.items())
        overlaps = 0
        for attempts in runs.values():
            latest_end = float("-inf")
            for start, end in sorted((start, end) for _, start, end in attempts):
                overlaps += start < latest_end
                latest_end = max(latest_end, end)
        crashed = sum(w.stderr.count("crashed; restarting") for w in self.workers)
        exit_codes = [w.process.returncode for w in alive]
        figures = {
            "tasks": tasks,
            "lost": lost,
            "overlaps": overlaps,
            "extra_runs": extra,
            "recovery_s": round(recovery, 2),
            "loops_dead": crashed + (0 if probe_ok else 1),
        }
        print(f"\nchaos {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
        stderr = "\n".join(w.stderr[-3000:] for w in self.workers)
        assert lost == 0, stderr
        assert overlaps == 0, runs
        assert extra <= allow_extra, (extra, stderr)
        assert figures["loops_dead"] == 0, stderr
        assert all(code == 0 for code in exit_codes), (exit_codes, stderr)
        return figures
