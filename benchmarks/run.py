"""Side-by-side benchmark of pgqueue and its Python peers (pgqueuer, procrastinate, chancy, oban).

Run with the project's interpreter (the one that can import pgqueue):

    python benchmarks/run.py [--dsn URL] [--repeat 2] [--only pgqueue,pgqueuer] [--quick]
                             [--scale] [--no-pgbench] [--out docs/benchmarks.md]
                             [--json benchmarks/results.json]

Every (workload, library) run happens in a fresh database `bench_<lib>_<n>` created on the
server of --dsn and dropped afterwards, in a separate driver process: pgqueue's driver runs with
this interpreter, the peers' drivers with the interpreter of `benchmarks/.venv-peers`, which is
created with Python 3.12 (oban needs it; see `python312()`) and re-created when
requirements-peers.txt changes. Runs are interleaved:
each repetition goes through every workload, and within a workload through every library, in
an order rotated from one repetition to the next. Reported values are medians over repetitions.
With pgbench (the default), pgqueue's two drains run once more per repetition with 200,000 tasks,
about 4 s each, and those are judged against the bare-SQL ceiling of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DRIVERS_DIR = BENCH_DIR / "drivers"
PEERS_VENV = BENCH_DIR / ".venv-peers"
PEERS_REQUIREMENTS = BENCH_DIR / "requirements-peers.txt"
PEERS_STAMP = PEERS_VENV / ".requirements.sha256"

sys.path.insert(0, str(DRIVERS_DIR))

import pgbench_lifecycle  # noqa: E402
from harness import DEFAULT_N, WORKLOADS  # noqa: E402
from pgconn import Db, create_database, database_of, drop_database, with_database  # noqa: E402
from stock_cluster import stock_server  # noqa: E402

LIBS: tuple[str, ...] = ("pgqueue", "pgqueuer", "procrastinate", "chancy", "oban")
PEERS: tuple[str, ...] = LIBS[1:]
FULL_N: dict[str, int] = dict(DEFAULT_N)
QUICK_N: dict[str, int] = {
    "enqueue_single": 500,
    "enqueue_batch": 5_000,
    "enqueue_threads64": 2_000,
    "enqueue_async64": 2_000,
    "drain_1p": 2_000,
    "drain_2p": 2_000,
    "latency": 50,
}
LOWER_IS_BETTER = {"latency"}
PGBENCH_REPEAT = 3  # pgbench runs per configuration; the best is the ceiling
CEILING_TARGET = 0.85  # the drains against the best batched pgbench figure of the same run
# The drains judged against that figure: pgqueue alone, long enough (about 4 s each) to measure
# a steady state as pgbench's 10-second runs do; the table's 20,000-task drains last under half
# a second, of which the worker's start-up is a tenth.
CEILING_DRAIN_N = 200_000
QUICK_CEILING_DRAIN_N = 20_000
CEILING_DRAINS = ("drain_1p", "drain_2p")
SCALE_TARGET = 0.8  # claim throughput with 2M extra rows must stay within 20 %


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- environment


def peers_python() -> Path:
    return PEERS_VENV / "bin" / "python"


PEERS_PYTHON_VERSION = "3.12"  # oban needs Python >= 3.12; the other peers run on it too


def python312() -> str:
    """The interpreter the peers' venv is made with: $PGQUEUE_BENCH_PYTHON312 (or $PYTHON312),
    else pyenv's newest 3.12 (`pyenv prefix`), else `python3.12` on PATH."""
    override = os.environ.get("PGQUEUE_BENCH_PYTHON312") or os.environ.get("PYTHON312")
    if override:
        return override
    if shutil.which("pyenv"):
        versions = subprocess.run(
            ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False
        ).stdout.split()
        matching = sorted(
            (v for v in versions if v.startswith(PEERS_PYTHON_VERSION + ".")),
            key=lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")],
        )
        if matching:
            prefix = subprocess.run(
                ["pyenv", "prefix", matching[-1]], capture_output=True, text=True, check=False
            ).stdout.strip()
            candidate = Path(prefix) / "bin" / "python"
            if prefix and candidate.exists():
                return str(candidate)
    found = shutil.which("python" + PEERS_PYTHON_VERSION)
    if found:
        return found
    raise SystemExit(
        f"the peers' venv needs Python {PEERS_PYTHON_VERSION} (oban requires it): install it"
        f" (pyenv install {PEERS_PYTHON_VERSION}), put python{PEERS_PYTHON_VERSION} on PATH or"
        " set PGQUEUE_BENCH_PYTHON312=/path/to/python3.12"
    )


def ensure_peers_venv() -> None:
    """Create benchmarks/.venv-peers and install the peers unless it is already up to date."""
    digest = hashlib.sha256(PEERS_REQUIREMENTS.read_bytes()).hexdigest()
    if peers_python().exists() and PEERS_STAMP.exists() and PEERS_STAMP.read_text() == digest:
        return
    log(f"creating {PEERS_VENV.relative_to(ROOT)} ...")
    subprocess.run([python312(), "-m", "venv", "--clear", str(PEERS_VENV)], check=True, timeout=300)
    subprocess.run(
        [str(peers_python()), "-m", "pip", "install", "-q", "-r", str(PEERS_REQUIREMENTS)],
        check=True,
        timeout=1200,
    )
    PEERS_STAMP.write_text(digest)


pgqueue_python = sys.executable  # pgqueue's driver's interpreter: set from --pgqueue-python


def interpreter_for(lib: str) -> str:
    return pgqueue_python if lib == "pgqueue" else str(peers_python())


def _python_version(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def environment_for(lib: str) -> dict[str, str]:
    env = dict(os.environ)
    if lib != "pgqueue":
        # The peers' interpreter must not pick up packages of the project's venv.
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
    return env


# --------------------------------------------------------------------------- one run


class RunCounter:
    """Numbers the databases of this invocation: bench_<lib>_<n>."""

    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value


def run_driver(
    lib: str,
    workload: str,
    n: int,
    admin_dsn: str,
    number: int,
    timeout: float,
    extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run one driver in a fresh database; return its JSON result or an error record."""
    dbname = f"bench_{lib}_{number}"
    record: dict[str, Any] = {"lib": lib, "workload": workload, "n": n, "database": dbname}
    cmd = [
        interpreter_for(lib),
        str(DRIVERS_DIR / f"{lib}_driver.py"),
        "--dsn", with_database(admin_dsn, dbname),
        "--workload", workload,
        "--n", str(n),
        *(extra_args or []),
    ]  # fmt: skip
    asyncio.run(create_database(admin_dsn, dbname))
    started = time.perf_counter()
    try:
        # A session of its own, so that a timeout can stop the driver and its workers together.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment_for(lib),
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate(timeout=30)
            record["error"] = f"timed out after {timeout:.0f} s"
    finally:
        asyncio.run(drop_database(admin_dsn, dbname))
    record["wall_s"] = time.perf_counter() - started
    result = _last_result_line(stdout)
    if "error" not in record and proc.returncode == 0 and result is not None:
        record.update(result)
        return record
    record.setdefault("error", f"exit code {proc.returncode}")
    # Worker processes write to the same stderr, so keep enough to see their errors too.
    record["stderr_tail"] = "\n".join(stderr.strip().splitlines()[-60:])
    return record


def _last_result_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and "workload" in data and "value" in data:
                return data
    return None


def describe(record: dict[str, Any]) -> str:
    if "error" in record:
        tail = record.get("stderr_tail", "").splitlines()[-15:]
        return f"ERROR {record['error']}\n" + "\n".join(tail)
    if record.get("na"):
        return f"n/a ({record['na']})"
    if record["unit"] == "ms":
        return (
            f"p50 {record['p50_ms']:.1f} ms, p95 {record['p95_ms']:.1f} ms,"
            f" p99 {record['p99_ms']:.1f} ms"
        )
    cpu = record.get("worker_cpu_us_per_task")
    tail = f", worker CPU {cpu:.1f} µs/task" if cpu is not None else ""
    return f"{record['value']:,.0f} {record['unit']} ({record['seconds']:.2f} s{tail})"


# --------------------------------------------------------------------------- suites


# Runs per repetition: enqueue_single is short and the most sensitive to the disk's flush
# latency (every task is one commit), so it gets more interleaved runs for a steadier median.
EXTRA_RUNS = {"enqueue_single": 3}


def run_matrix(
    libs: list[str],
    workloads: list[str],
    sizes: dict[str, int],
    repeat: int,
    admin_dsn: str,
    counter: RunCounter,
    timeout: float,
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for rep in range(repeat):
        for w_index, workload in enumerate(workloads):
            for extra in range(EXTRA_RUNS.get(workload, 1)):
                shift = (rep + w_index + extra) % len(libs)
                for lib in libs[shift:] + libs[:shift]:
                    record = run_driver(
                        lib, workload, sizes[workload], admin_dsn, counter.next(), timeout
                    )
                    record["repeat"] = rep + 1
                    runs.append(record)
                    log(f"[{rep + 1}/{repeat}] {workload:<14} {lib:<13} {describe(record)}")
    return runs


def run_scale(
    n: int, filler: int, repeat: int, admin_dsn: str, counter: RunCounter, timeout: float
) -> dict[str, Any]:
    """pgqueue drain throughput on an empty table vs with `filler` finished + delayed rows."""
    runs: list[dict[str, Any]] = []
    for rep in range(repeat):
        for label, rows in (("empty", 0), ("filled", filler)):
            extra = ["--prefill-terminal", str(rows), "--prefill-delayed", str(rows)]
            record = run_driver("pgqueue", "drain_1p", n, admin_dsn, counter.next(), timeout, extra)
            record.update({"repeat": rep + 1, "table": label})
            runs.append(record)
            log(f"[{rep + 1}/{repeat}] scale {label:<7} pgqueue       {describe(record)}")
    medians = {}
    for label in ("empty", "filled"):
        values = [r["value"] for r in runs if r["table"] == label and "error" not in r]
        medians[label] = statistics.median(values) if values else None
    ratio = medians["filled"] / medians["empty"] if medians["empty"] and medians["filled"] else None
    return {
        "n": n,
        "terminal_rows": filler,
        "delayed_rows": filler,
        "median_empty": medians["empty"],
        "median_filled": medians["filled"],
        "ratio": ratio,
        "target": SCALE_TARGET,
        "passed": ratio is not None and ratio >= SCALE_TARGET,
        "runs": runs,
    }


def run_ceiling_drains(
    n: int, repeat: int, admin_dsn: str, counter: RunCounter, timeout: float
) -> dict[str, Any]:
    """pgqueue's drains of ``n`` tasks, ``repeat`` times each, for the ceiling comparison."""
    runs: list[dict[str, Any]] = []
    for rep in range(repeat):
        for workload in CEILING_DRAINS:
            record = run_driver("pgqueue", workload, n, admin_dsn, counter.next(), timeout)
            record["repeat"] = rep + 1
            runs.append(record)
            log(f"[{rep + 1}/{repeat}] {workload} of {n:,} pgqueue {describe(record)}")
    medians: dict[str, float] = {}
    running: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for workload in CEILING_DRAINS:
        done = [r for r in runs if r["workload"] == workload and "error" not in r]
        if done:
            medians[workload] = statistics.median(r["value"] for r in done)
            running[workload] = statistics.median(r["running_value"] for r in done)
            seconds[workload] = statistics.median(r["seconds"] for r in done)
    return {
        "n": n,
        "repeat": repeat,
        "median": medians,
        "running_median": running,
        "seconds_median": seconds,
        "runs": runs,
    }


# --------------------------------------------------------------------------- reporting


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if "error" not in run and not run.get("na"):
            grouped[(run["workload"], run["lib"])].append(run)
    summary: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (workload, lib), items in grouped.items():
        cell: dict[str, Any] = {
            "median": statistics.median(r["value"] for r in items),
            "unit": items[0]["unit"],
            "values": [r["value"] for r in items],
            "version": items[0].get("version"),
            "config": items[0].get("config"),
        }
        if workload == "latency":
            for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
                cell[key] = statistics.median(r[key] for r in items)
        for key in ("worker_cpu_us_per_task", "machine_cpu_us_per_task", "running_value"):
            measured = [r[key] for r in items if r.get(key) is not None]
            if measured:
                cell[key] = statistics.median(measured)
        summary[workload][lib] = cell
    return summary


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if unit == "ms" else f"{value:,.0f}"


def _ratio(summary: dict[str, dict[str, Any]], peer: str) -> str:
    ours, theirs = summary.get("pgqueue"), summary.get(peer)
    if not ours or not theirs or not theirs["median"]:
        return "—"
    return f"{ours['median'] / theirs['median']:.2f}x"


def best_peer_ratio(
    workload: str, cells: dict[str, dict[str, Any]], peers: list[str]
) -> tuple[str, float] | None:
    """pgqueue's median over the best peer's (the highest throughput; for latency the lowest
    time): (that peer, the ratio), or None without pgqueue or any peer figure."""
    ours = cells.get("pgqueue")
    theirs = {p: cells[p]["median"] for p in peers if p in cells and cells[p]["median"]}
    if not ours or not theirs:
        return None
    pick = min if workload in LOWER_IS_BETTER else max
    peer = pick(theirs, key=lambda p: theirs[p])
    return peer, ours["median"] / theirs[peer]


def _ahead(workload: str, ratio: float) -> bool:
    """Whether pgqueue beats the best peer: a higher rate, or for latency a lower time."""
    return ratio < 1.0 if workload in LOWER_IS_BETTER else ratio > 1.0


def _verdict_line(verdicts: dict[str, bool], workloads: list[str]) -> str:
    behind = [w for w in workloads if w in verdicts and not verdicts[w]]
    missing = [w for w in workloads if w not in verdicts]
    if not verdicts:
        return "No workload has figures for both pgqueue and a peer."
    text = (
        "pgqueue is ahead of the best peer on every workload with figures"
        if not behind
        else "pgqueue is NOT ahead of the best peer on every workload: behind on "
        + ", ".join(behind)
    )
    if missing:
        text += f" (no comparison for {', '.join(missing)})"
    return (
        text
        + ". A ratio above 1 is ahead for throughput; for latency (lower is better) below 1 is."
    )


def render_markdown(
    meta: dict[str, Any],
    libs: list[str],
    workloads: list[str],
    summary: dict[str, dict[str, dict[str, Any]]],
    runs: list[dict[str, Any]],
    pgbench: list[dict[str, Any]] | None,
    scale: dict[str, Any] | None,
    long_drains: dict[str, Any] | None = None,
) -> str:
    # Ratios are pgqueue's median over each peer's, so they need pgqueue in the run.
    peers = [lib for lib in libs if lib != "pgqueue"] if "pgqueue" in libs else []
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (`python benchmarks/run.py`) on {meta['date']}:"
        f" PostgreSQL {meta['postgres']}"
        f"{' (' + meta['server'] + ')' if meta.get('server') else ''},"
        f" {meta['cpus']} CPUs, Python {meta['python']}"
        f"{' (peers ' + meta['peers_python'] + ')' if meta.get('peers_python') else ''}"
        f"{', quick mode' if meta['quick'] else ''}."
        f" Each cell is the median of {meta['repeat']} runs"
        f" ({meta['repeat'] * EXTRA_RUNS['enqueue_single']} for enqueue_single),"
        " each on a fresh database;"
        " what each workload does is described in `benchmarks/README.md`.",
        "",
    ]
    versions = {
        lib: next((r.get("version") for r in runs if r["lib"] == lib and r.get("version")), None)
        for lib in libs
    }
    lines.append("Versions: " + ", ".join(f"{lib} {versions[lib] or '?'}" for lib in libs) + ".")
    lines += [
        "",
        "Throughput in tasks/s (higher is better); latency p50 in ms (lower is better).",
        "",
    ]
    best_column = ["pgqueue ÷ best peer"] if peers else []
    header = ["workload", "n", *libs, *(f"pgqueue ÷ {p}" for p in peers), *best_column]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
    not_available = {(r["workload"], r["lib"]) for r in runs if r.get("na")}
    verdicts: dict[str, bool] = {}
    for workload in workloads:
        cells = summary.get(workload, {})
        unit = next((c["unit"] for c in cells.values()), "")
        n = meta["sizes"][workload]
        row = [f"{workload} ({unit})" if unit else workload, f"{n:,}"]
        row += [
            _fmt(cells[lib]["median"], unit)
            if lib in cells
            else ("n/a" if (workload, lib) in not_available else "error")
            for lib in libs
        ]
        row += [_ratio(cells, p) for p in peers]
        if peers:
            best = best_peer_ratio(workload, cells, peers)
            row.append("—" if best is None else f"{best[1]:.2f}x ({best[0]})")
            if best is not None:
                verdicts[workload] = _ahead(workload, best[1])
        lines.append("| " + " | ".join(row) + " |")
    if peers:
        lines += ["", _verdict_line(verdicts, workloads)]

    latency = summary.get("latency", {})
    if latency:
        lines += ["", "Latency from push to handler start, ms:", ""]
        lines.append("| library | p50 | p95 | p99 | max |")
        lines.append("|---|---:|---:|---:|---:|")
        for lib in libs:
            if lib in latency:
                c = latency[lib]
                lines.append(
                    f"| {lib} | {c['p50_ms']:.1f} | {c['p95_ms']:.1f} | {c['p99_ms']:.1f}"
                    f" | {c['max_ms']:.1f} |"
                )

    drains = [w for w in workloads if w.startswith("drain_") and summary.get(w)]
    if any("worker_cpu_us_per_task" in c for w in drains for c in summary[w].values()):
        lines += [
            "",
            "CPU time per drained task, µs (medians): the worker processes' own, then every"
            " process's on the machine (the server's share is most of the rest):",
            "",
            "| workload | " + " | ".join(libs) + " |",
            "|---|" + "---:|" * len(libs),
        ]
        for workload in drains:
            cells = summary[workload]
            row = [workload]
            row += [_cpu_cell(cells.get(lib, {})) for lib in libs]
            lines.append("| " + " | ".join(row) + " |")

    if pgbench is not None and not pgbench:
        lines += ["", "The pgbench baseline failed; see the run's log."]
    if pgbench:
        lines += [
            "",
            "Bare-SQL ceiling (`benchmarks/pgbench_lifecycle.py`: insert, claim with"
            " SKIP LOCKED, complete; no queue library), jobs/s:",
            "",
            "| script | clients | jobs/s (best) | every run |",
            "|---|---:|---:|---|",
        ]
        for entry in pgbench:
            every = ", ".join(f"{v:,.0f}" for v in entry.get("runs_jobs_per_s", []))
            lines.append(
                f"| {entry['mode']} | {entry['clients']} | {entry['jobs_per_s']:,.0f} | {every} |"
            )
        lines += _ceiling_lines(summary, pgbench, long_drains)

    if scale:
        verdict = "pass" if scale["passed"] else "FAIL"
        ratio = f"{scale['ratio']:.2f}" if scale["ratio"] is not None else "—"
        lines += [
            "",
            f"Scale check (pgqueue, drain_1p of {scale['n']:,} tasks): empty table"
            f" {_fmt(scale['median_empty'], 'tasks/s')} tasks/s; with"
            f" {scale['terminal_rows']:,} succeeded + {scale['delayed_rows']:,} future-delayed"
            f" rows {_fmt(scale['median_filled'], 'tasks/s')} tasks/s; ratio {ratio}"
            f" (target ≥ {scale['target']}): {verdict}.",
        ]

    errors = [r for r in runs if "error" in r]
    if errors:
        lines += ["", f"{len(errors)} run(s) failed:", ""]
        for r in errors:
            lines.append(f"- {r['workload']} / {r['lib']} (repeat {r.get('repeat')}): {r['error']}")

    lines += ["", "Configuration per library:", ""]
    for lib in libs:
        config = next((r.get("config") for r in runs if r["lib"] == lib and r.get("config")), None)
        if config:
            settings = ", ".join(f"{k}={v}" for k, v in config.items())
            lines.append(f"- {lib}: {settings}")
    return "\n".join(lines) + "\n"


def _cpu_cell(cell: dict[str, Any]) -> str:
    """``worker / machine`` µs per task, ``worker`` alone off Linux, ``—`` when not measured."""
    worker, machine = cell.get("worker_cpu_us_per_task"), cell.get("machine_cpu_us_per_task")
    if worker is None:
        return "—"
    return f"{worker:.1f}" if machine is None else f"{worker:.1f} / {machine:.1f}"


def ceiling_ratios(
    summary: dict[str, dict[str, dict[str, Any]]],
    pgbench: list[dict[str, Any]],
    long_drains: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """pgqueue's drains against the highest batched pgbench figure of the same run: the long
    drains (``run_ceiling_drains``) are judged when there are any, else the table's."""
    batched = [e for e in pgbench if e["mode"] == "batch100"]
    if not batched:
        return None
    best = max(batched, key=lambda e: e["jobs_per_s"])
    ceiling = best["jobs_per_s"]
    table = {
        workload: summary[workload]["pgqueue"]["median"] / ceiling
        for workload in CEILING_DRAINS
        if summary.get(workload, {}).get("pgqueue", {}).get("median")
    }
    table_running = {
        workload: summary[workload]["pgqueue"]["running_value"] / ceiling
        for workload in table
        if summary[workload]["pgqueue"].get("running_value")
    }
    long_medians: dict[str, float] = (long_drains or {}).get("median", {})
    long = {workload: value / ceiling for workload, value in long_medians.items()}
    judged = long or table
    return {
        "ceiling_jobs_per_s": ceiling,
        "ceiling_clients": best["clients"],
        "judged": f"drains of {long_drains['n']} tasks" if long and long_drains else "the table's",
        "ratios": judged,
        "long_drain_ratios": long,
        "table_ratios": table,
        "table_running_ratios": table_running,
        "target": CEILING_TARGET,
        "passed": bool(judged) and all(r >= CEILING_TARGET for r in judged.values()),
    }


def _ceiling_lines(
    summary: dict[str, dict[str, dict[str, Any]]],
    pgbench: list[dict[str, Any]],
    long_drains: dict[str, Any] | None = None,
) -> list[str]:
    ceiling = ceiling_ratios(summary, pgbench, long_drains)
    if ceiling is None or not ceiling["ratios"]:
        return []
    best = ceiling["ceiling_jobs_per_s"]
    verdict = "met" if ceiling["passed"] else "NOT met"
    target = f"target ≥ {ceiling['target']:.0%}: {verdict}"
    lines = [""]
    if ceiling["long_drain_ratios"] and long_drains:
        parts = ", ".join(
            f"{workload} {long_drains['median'][workload]:,.0f} tasks/s = **{ratio:.0%}** of it"
            for workload, ratio in ceiling["long_drain_ratios"].items()
        )
        seconds = long_drains["seconds_median"].values()
        lines += [
            f"pgqueue's drains of {long_drains['n']:,} tasks (medians of {long_drains['repeat']},"
            f" {min(seconds):.1f} to {max(seconds):.1f} s each, start-up included; each pgbench"
            f" run lasts {long_drains['pgbench_seconds']} s) against the best batched"
            f" figure ({best:,.0f} jobs/s, {ceiling['ceiling_clients']} clients): {parts}"
            f" ({target}).",
            "",
        ]
    if ceiling["table_ratios"]:
        parts = ", ".join(
            f"{workload} {summary[workload]['pgqueue']['median']:,.0f} tasks/s = **{ratio:.0%}**"
            for workload, ratio in ceiling["table_ratios"].items()
        )
        if ceiling["long_drain_ratios"]:
            text = (
                "The table's drains, which last under a second and include the worker's start-up"
                f" (connecting, the first claims): {parts} of it."
            )
        else:
            text = (
                f"pgqueue's drains against the best batched figure ({best:,.0f} jobs/s,"
                f" {ceiling['ceiling_clients']} clients): {parts} of it ({target})."
            )
        if ceiling["table_running_ratios"]:
            text += (
                " From their first task's start on (without the worker's start-up, as pgbench"
                " leaves out its connections'): "
                + ", ".join(
                    f"{workload} {summary[workload]['pgqueue']['running_value']:,.0f} tasks/s"
                    f" = {ratio:.0%}"
                    for workload, ratio in ceiling["table_running_ratios"].items()
                )
                + "."
            )
        lines.append(text)
    return lines


async def _server_version(admin_dsn: str) -> str:
    db = await Db.connect(admin_dsn)
    try:
        return str(await db.scalar("SHOW server_version"))
    finally:
        await db.close()


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark pgqueue against pgqueuer, procrastinate, chancy and oban."
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGQUEUE_BENCH_DSN"),
        help="postgresql:// URL of a database on the server to use (env PGQUEUE_BENCH_DSN);"
        " benchmark databases bench_* are created and dropped next to it. Without it, a"
        " cluster with stock settings is started for the run (the pgserver wheel's binaries)",
    )
    parser.add_argument("--repeat", type=int, default=2, help="repetitions per cell (≥ 1)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(LIBS)}")
    parser.add_argument("--workloads", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--quick", action="store_true", help="smaller N for a fast check")
    parser.add_argument("--scale", action="store_true", help="also run pgqueue's scale check")
    parser.add_argument(
        "--pgbench",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the bare-SQL ceiling with pgbench",
    )
    parser.add_argument(
        "--pgqueue-python",
        default=sys.executable,
        help="the interpreter of pgqueue's driver (default: this one); `make bench` passes the"
        " project's Python 3.12 venv, the version the peers run on",
    )
    parser.add_argument("--run-timeout", type=float, help="upper bound per driver run, s")
    parser.add_argument("--out", default="docs/benchmarks.md", help="markdown report path")
    parser.add_argument("--json", default="benchmarks/results.json", help="JSON results path")
    args = parser.parse_args()
    args.libs = _subset(parser, args.only, LIBS, "--only")
    args.workload_list = _subset(parser, args.workloads, WORKLOADS, "--workloads")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _subset(
    parser: argparse.ArgumentParser, value: str | None, allowed: tuple[str, ...], flag: str
) -> list[str]:
    if not value:
        return list(allowed)
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        parser.error(f"{flag}: unknown {', '.join(unknown)}")
    return [v for v in allowed if v in chosen]  # canonical order


REPORT_START = "<!-- report generated by benchmarks/run.py: start -->"
REPORT_END = "<!-- report generated by benchmarks/run.py: end -->"


def write_report(path: Path, report: str) -> None:
    """Write the report; into a document with the report markers, only between them (so the
    hand-written analysis around it survives a new run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if REPORT_START in text and REPORT_END in text:
        head, rest = text.split(REPORT_START, 1)
        _, tail = rest.split(REPORT_END, 1)
        body = report.strip()
        if body.startswith("# "):  # the document has its own title
            body = body.split("\n", 1)[1].strip()
        text = f"{head}{REPORT_START}\n\n{body}\n\n{REPORT_END}{tail}"
    else:
        text = report
    path.write_text(text, encoding="utf-8")


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


def main() -> int:
    args = parse_args()
    if args.dsn:
        args.server = "the server of --dsn"
        return bench(args)
    # By default a cluster of its own with stock settings: a server tuned otherwise (autovacuum
    # off, say) measures that server's settings as much as the libraries.
    with tempfile.TemporaryDirectory(prefix="pgqueue-bench-") as scratch:
        server = stock_server(Path(scratch), "bench")
        try:
            args.dsn = server.dsn
            args.server = "a cluster with stock settings started for the run"
            return bench(args)
        finally:
            server.ensure_stopped()


def bench(args: argparse.Namespace) -> int:
    global pgqueue_python
    pgqueue_python = args.pgqueue_python
    if database_of(args.dsn).startswith("bench_"):
        raise SystemExit("--dsn must name a database other than the bench_* ones it manages")
    if any(lib in PEERS for lib in args.libs):
        ensure_peers_venv()
    sizes = QUICK_N if args.quick else FULL_N
    timeout = args.run_timeout or (300.0 if args.quick else 900.0)
    counter = RunCounter()
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "postgres": asyncio.run(_server_version(args.dsn)),
        "server": args.server,
        "cpus": os.cpu_count(),
        "python": _python_version(pgqueue_python),
        "peers_python": (
            _python_version(str(peers_python())) if any(lib in PEERS for lib in args.libs) else None
        ),
        "quick": args.quick,
        "repeat": args.repeat,
        "sizes": sizes,
        "libs": args.libs,
        "workloads": args.workload_list,
    }

    runs = run_matrix(args.libs, args.workload_list, sizes, args.repeat, args.dsn, counter, timeout)
    summary = summarize(runs)

    pgbench_seconds = 3 if args.quick else 10
    long_drains: dict[str, Any] | None = None
    if args.pgbench and "pgqueue" in args.libs and set(CEILING_DRAINS) & set(args.workload_list):
        long_drains = run_ceiling_drains(
            QUICK_CEILING_DRAIN_N if args.quick else CEILING_DRAIN_N,
            args.repeat,
            args.dsn,
            counter,
            timeout,
        )
        long_drains["pgbench_seconds"] = pgbench_seconds

    pgbench: list[dict[str, Any]] | None = None
    if args.pgbench:
        try:
            pgbench = pgbench_lifecycle.run_lifecycle(
                args.dsn, pgbench_seconds, [2, 4], 1 if args.quick else PGBENCH_REPEAT
            )
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log(f"pgbench baseline failed: {exc}")
            pgbench = []

    scale: dict[str, Any] | None = None
    if args.scale:
        scale = run_scale(
            n=5_000 if args.quick else 20_000,
            filler=100_000 if args.quick else 1_000_000,
            repeat=args.repeat,
            admin_dsn=args.dsn,
            counter=counter,
            timeout=timeout,
        )

    report = render_markdown(
        meta, args.libs, args.workload_list, summary, runs, pgbench, scale, long_drains
    )
    print(report)
    out, json_out = _resolve(args.out), _resolve(args.json)
    write_report(out, report)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(
        json.dumps(
            {
                "meta": meta,
                "summary": summary,
                "runs": runs,
                "pgbench": pgbench,
                "ceiling": ceiling_ratios(summary, pgbench, long_drains) if pgbench else None,
                "ceiling_drains": long_drains,
                "scale": scale,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    log(f"wrote {out} and {json_out}")
    # The exit status reports broken runs; performance verdicts are in the report.
    failed = (
        any("error" in r for r in runs)
        or bool(scale and any("error" in r for r in scale["runs"]))
        or bool(long_drains and any("error" in r for r in long_drains["runs"]))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
