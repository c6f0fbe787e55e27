#!/usr/bin/env python3
"""Executor benchmarks: prints figures, asserts nothing.

    .venv/bin/python tests/perf/bench_executor.py [--repeat N] [--workloads w1,w2,w3]
    .venv/bin/python tests/perf/bench_executor.py --database postgresql+asyncpg://… [--workers 1,2]
    .venv/bin/python tests/perf/bench_executor.py --start-postgres [--workers 1,2,3]

Every transition is persisted (SQLite WAL, synchronous=NORMAL, unless --database says
otherwise), on the event loop `serve` and `worker` run on (uvloop), as in production.
On PostgreSQL the workloads run once per worker count: that many `provisioning worker`
processes claim the tasks, while this process submits and waits like an API-only
`serve --no-worker` (`--start-postgres` starts a throwaway PostgreSQL 15 cluster, as the
tests do, with pg_stat_statements, and gives each worker count a fresh database). Each
workload prints its best, median and range over `--repeat` runs, and on PostgreSQL what
a task cost: round trips (the driver's count, from every process; pg_stat_statements'
where available) and CPU time (the workers, this process, the PostgreSQL server).

- W1 fan-out: 1 -> 1000 no-op tasks -> 1 join, parallel limit 8: tasks per second;
- W2 chain: 200 no-op tasks in a line: milliseconds per dependency hop;
- W3 processes: 200 tasks each running `true`, limit 8, beside `make -j8` running the
  same 200 `true` commands; on the `local` instance as configured by default (safe:
  `record_exit`, commands isolated: as `provisioning-run` when run as root, in
  bubblewrap otherwise), then on one in the fast mode (`record_exit = false`,
  `isolation = "none"`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import logging  # noqa: E402

import structlog  # noqa: E402
import uvloop  # noqa: E402

from orchestrator.service import Orchestrator, freeze_startup_heap  # noqa: E402
from orchestrator.settings import load_settings  # noqa: E402
from orchestrator.specs import TaskSpec, WorkflowSpec  # noqa: E402
from orchestrator.store.engine import create_engine, upgrade  # noqa: E402


def noop(name: str, deps: list[str] | None = None) -> TaskSpec:
    return TaskSpec(name=name, provider="bench", action="noop", dependencies=deps or [])


def fan_out(width: int) -> list[TaskSpec]:
    middle = [noop(f"t{i}", ["start"]) for i in range(width)]
    return [noop("start"), *middle, noop("join", [t.name for t in middle])]


def chain(length: int) -> list[TaskSpec]:
    return [noop(f"c{i}", [f"c{i - 1}"] if i else []) for i in range(length)]


def processes(count: int, provider: str = "local") -> list[TaskSpec]:
    return [
        TaskSpec(name=f"p{i}", provider=provider, action="run", params={"command": "true"})
        for i in range(count)
    ]


#: The `local` instances W3 runs on: the default configuration, and the fast mode.
W3_MODES = {
    "local": "default",
    "fast": "fast: record_exit = false, isolation = none",
}


async def run_workflow(orchestrator: Orchestrator, tasks: list[TaskSpec], limit: int) -> float:
    start = time.perf_counter()
    workflow_id = await orchestrator.submit(
        WorkflowSpec(kind="custom", name="bench", tasks=tasks, parallel_limit=limit)
    )
    await orchestrator.scheduler.wait(workflow_id)
    elapsed = time.perf_counter() - start
    async with orchestrator.engine.connect() as connection:
        from sqlalchemy import text

        status = (
            await connection.execute(
                text("select status from workflows where id = :id"), {"id": workflow_id}
            )
        ).scalar_one()
    assert status == "Completed", status
    return elapsed


def make_seconds(count: int, jobs: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        targets = " ".join(f"p{i}" for i in range(count))
        rules = "".join(f"p{i}:\n\t@true\n" for i in range(count))
        (Path(directory) / "Makefile").write_text(f".PHONY: all {targets}\nall: {targets}\n{rules}")
        start = time.perf_counter()
        subprocess.run(["make", "-s", f"-j{jobs}", "-C", directory], check=True)
        return time.perf_counter() - start


@contextmanager
def workers(count: int, environ: dict[str, str]) -> Iterator[tuple[list[str], list[int]]]:
    """`count` `provisioning worker` processes, each with its own data directory; yields
    the URLs of their `/metrics` (each on a free port, as its banner says) and their
    process ids."""
    processes = []
    logs = []
    try:
        for n in range(count):
            data_dir = tempfile.mkdtemp(prefix=f"bench-worker-{n}-")
            log = open(Path(data_dir) / "worker.log", "w+b")  # noqa: SIM115
            logs.append(log)
            env = {**os.environ, **environ, "PROVISIONING_DATA_DIR": data_dir}
            env["PROVISIONING_SERVER__LOG_LEVEL"] = "warning"
            env["PROVISIONING_WORKER__METRICS_PORT"] = "0"
            processes.append(
                subprocess.Popen(
                    [str(Path(sys.executable).parent / "provisioning"), "worker"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for process, log in zip(processes, logs, strict=True):
            deadline = time.monotonic() + 120  # (a busy machine)
            while b"provisioning worker" not in Path(log.name).read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    output = Path(log.name).read_text()
                    raise RuntimeError(f"worker exit {process.poll()}: {output}")
                time.sleep(0.05)
        urls = []
        for log in logs:
            for line in Path(log.name).read_text().splitlines():
                if line.strip().startswith("metrics ") and "http://" in line:
                    urls.append(line.split()[-1].rstrip("/") + "/metrics")
        yield urls, [process.pid for process in processes]
    finally:
        for process in processes:
            process.terminate()
        for process, log in zip(processes, logs, strict=False):
            process.wait(30)
            log.close()
            shutil.rmtree(Path(log.name).parent, ignore_errors=True)


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User and system CPU time of a process (and of its children that have exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def postgres_cpu(postmaster: int) -> float:
    """The CPU time of a PostgreSQL server: its postmaster and every backend."""
    total = cpu_seconds(postmaster, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += cpu_seconds(int(stat.parent.name))
    return total


class Counts:
    """What a workload cost, per task: round trips, counted by pg_stat_statements (every
    process; on the bench's own cluster, where it is preloaded; without the rows of the
    submission's two INSERTs, each sent as one pipelined executemany) and by the driver
    (`orchestrator_database_round_trips`: this process's, and each worker's read from its
    `/metrics`); and CPU time, of the workers, of this (submitting) process and of the
    PostgreSQL server, where known."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        dsn: str | None,
        metrics: list[str],
        pids: list[int],
        postmaster: int | None,
    ) -> None:
        self.orchestrator = orchestrator
        self.dsn = dsn
        self.metrics = metrics
        self.pids = pids
        self.postmaster = postmaster

    async def read(self, *, starting: bool) -> dict[str, float]:
        """Before a run (`starting`), the CPU times last; after it, first: the readings
        themselves (a connection, a query, the workers' `/metrics`) are not counted."""
        readings: dict[str, float] = {}
        if not starting:
            self._cpu(readings)
        statements = await self._statements()
        if statements is not None:
            readings["pg_stat_statements"] = statements
        driver = self._driver()
        if driver is not None:
            readings["driver"] = driver
        if starting:
            self._cpu(readings)
        return readings

    def _cpu(self, readings: dict[str, float]) -> None:
        readings["cpu workers"] = sum(cpu_seconds(pid) for pid in self.pids)
        readings["cpu submitter"] = time.process_time()
        if self.postmaster is not None:
            readings["cpu postgres"] = postgres_cpu(self.postmaster)

    async def _statements(self) -> float | None:
        if self.dsn is None:
            return None
        import asyncpg

        try:
            connection = await asyncpg.connect(self.dsn)
        except (OSError, asyncpg.PostgresError):
            return None
        try:
            # (This query counts once too: the difference of two readings is one high.)
            calls = await connection.fetchval(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = "
                "(SELECT oid FROM pg_database WHERE datname = current_database()) AND toplevel "
                "AND query NOT LIKE 'INSERT INTO tasks %' "
                "AND query NOT LIKE 'INSERT INTO task_dependencies %'"
            )
        except asyncpg.PostgresError:
            return None
        finally:
            await connection.close()
        return float(calls) - 1 + 2  # (+ the two executemany)

    def _driver(self) -> float | None:
        counter = getattr(self.orchestrator, "round_trips", None)
        if counter is None:
            return None
        total = float(counter.count)
        for url in self.metrics:
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            total += sum(
                float(line.rpartition(" ")[2])
                for line in text.splitlines()
                if line.startswith("orchestrator_database_round_trips_total")
            )
        return total


def spread(values: list[float], unit: str, digits: int = 0) -> str:
    """Best, median and worst of a workload's runs."""
    return (
        f"median {statistics.median(values):,.{digits}f}, "
        f"range {min(values):,.{digits}f}-{max(values):,.{digits}f} {unit}"
    )


Run = tuple[float, dict[str, float]]


async def measured(orchestrator: Orchestrator, tasks: list[TaskSpec], counts: Counts | None) -> Run:
    """One run: seconds, and what it cost per task (`Counts`)."""
    before = await counts.read(starting=True) if counts else {}
    elapsed = await run_workflow(orchestrator, tasks, 8)
    after = await counts.read(starting=False) if counts else {}
    return elapsed, {k: (after[k] - before[k]) / len(tasks) for k in after if k in before}


def costs(runs: list[Run]) -> str:
    """Medians of the runs' costs per task."""
    keys = [k for k in runs[0][1] if all(k in r for _, r in runs)]
    if not keys:
        return ""
    trips = [k for k in keys if not k.startswith("cpu")]
    cpu = [k for k in keys if k.startswith("cpu")]
    parts = []
    if trips:
        shown = ", ".join(f"{k} {statistics.median(r[k] for _, r in runs):.2f}" for k in trips)
        parts.append(f"round trips per task (median): {shown}")
    if cpu:
        shown = ", ".join(
            f"{k[4:]} {statistics.median(r[k] for _, r in runs) * 1e6:,.0f}" for k in cpu
        )
        parts.append(f"CPU µs per task (median): {shown}")
    return "\n    " + "\n    ".join(parts)


async def workloads(
    orchestrator: Orchestrator, repeat: int, only: set[str], counts: Counts | None = None
) -> None:
    if "w1" in only:
        runs = [await measured(orchestrator, fan_out(1000), counts) for _ in range(repeat)]
        rates = [1002 / seconds for seconds, _ in runs]
        print(
            f"W1 fan-out 1->1000->1, limit 8: {max(rates):,.0f} tasks/s best"
            f" ({spread(rates, 'tasks/s')}){costs(runs)}"
        )
    if "w2" in only:
        runs = [await measured(orchestrator, chain(200), counts) for _ in range(repeat)]
        hops = [seconds * 1000 / 199 for seconds, _ in runs]
        print(
            f"W2 chain of 200: {min(hops):.2f} ms per hop best"
            f" ({spread(hops, 'ms', 2)}){costs(runs)}"
        )
    if "w3" not in only:
        return
    for provider, label in W3_MODES.items():
        if provider == "local":
            label = f"{label}: record_exit, isolation = {default_isolation()}"
        await processes_against_make(orchestrator, repeat, provider, label)


async def processes_against_make(
    orchestrator: Orchestrator, repeat: int, provider: str, label: str
) -> None:
    # W3 against make, each W3 run followed by a make run, so that both see the same
    # moment of a shared machine; one unmeasured pair first warms the page cache.
    await run_workflow(orchestrator, processes(200, provider), 8)
    make_seconds(200, 8)
    pairs = []
    for _ in range(repeat):
        w3 = await run_workflow(orchestrator, processes(200, provider), 8)
        pairs.append((w3, make_seconds(200, 8)))
    w3s, make = [w for w, _ in pairs], [m for _, m in pairs]
    print(
        f"W3 200 x `true`, limit 8 ({label}): {min(w3s) * 1000:.0f} ms"
        f" (median {statistics.median(w3s) * 1000:.0f})"
        f"; make -j8: {min(make) * 1000:.0f} ms (median {statistics.median(make) * 1000:.0f})"
        f"; ratio of the bests {min(w3s) / min(make):.2f}x"
        f", median ratio of the {repeat} pairs {statistics.median(w / m for w, m in pairs):.2f}x"
    )


def default_isolation() -> str:
    """What `isolation = "auto"` means here (the workers run on this host, as this user)."""
    from providers.local._isolation import DEFAULT_RUN_AS, Isolation

    return Isolation.configure("auto", DEFAULT_RUN_AS).mode


async def main(
    database: str | None,
    repeat: int,
    worker_counts: list[int],
    only: set[str],
    postmaster: int | None = None,
    fresh: Callable[[], str] | None = None,
    statements: int = 0,
) -> None:
    """`fresh`: a new empty database for each worker count (on the bench's own cluster),
    so that each count starts from the same state rather than after the others' runs."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    data_dir = tempfile.mkdtemp(prefix="bench-")
    environ = {
        "PROVISIONING_DATA_DIR": data_dir,
        "PROVISIONING_EXECUTOR__GLOBAL_LIMIT": "64",
        "PROVISIONING_EXECUTOR__PROVIDER_LIMIT": "64",
        "PROVISIONING_PROVIDERS__BENCH__TYPE": "sim",
        "PROVISIONING_PROVIDERS__BENCH__LATENCY": "0",
        # Exit statuses and output in the bench's directory, removed at the end.
        "PROVISIONING_PROVIDERS__LOCAL__STATE_DIR": str(Path(data_dir) / "local"),
        "PROVISIONING_PROVIDERS__FAST__TYPE": "local",
        "PROVISIONING_PROVIDERS__FAST__RECORD_EXIT": "false",
        "PROVISIONING_PROVIDERS__FAST__ISOLATION": "none",
        "PROVISIONING_PROVIDERS__FAST__STATE_DIR": str(Path(data_dir) / "local"),
    }
    if database:
        environ["PROVISIONING_DATABASE_URL"] = database
    settings = load_settings(environ=environ)
    if settings.is_sqlite:
        orchestrator = Orchestrator(settings)
        await orchestrator.start()
        freeze_startup_heap()  # as `serve` does once started
        print(
            "store: sqlite (WAL, synchronous=NORMAL); every transition persisted; "
            f"W1, W2: {repeat} runs; W3: {repeat} pairs with make"
        )
        try:
            await workloads(orchestrator, repeat, only)
        finally:
            await orchestrator.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
        return
    for index, count in enumerate(worker_counts):
        if fresh is not None and index:
            environ["PROVISIONING_DATABASE_URL"] = fresh()
            settings = load_settings(environ=environ)
        engine = create_engine(settings)
        await upgrade(engine)
        await engine.dispose()
        dsn = await statement_statistics(settings.resolved_database_url)
        print(
            f"store: postgresql, {count} worker process(es)"
            f"{', on a new database' if fresh is not None else ''}; "
            f"W1, W2: {repeat} runs; W3: {repeat} pairs with make"
        )
        orchestrator = Orchestrator(settings, run_tasks=False, background=False)
        await orchestrator.start()
        freeze_startup_heap()
        try:
            env = {k: v for k, v in environ.items() if k != "PROVISIONING_DATA_DIR"}
            with workers(count, env) as (metrics, pids):
                # Unmeasured: a few small workflows, so that every worker's connections
                # have prepared their statements (whichever worker wins a submission's
                # notification runs it).
                for _ in range(2 * count):
                    await run_workflow(orchestrator, chain(20), 8)
                counts = Counts(orchestrator, dsn, metrics, pids, postmaster)
                if dsn is not None and statements:
                    await reset_statements(dsn)
                await workloads(orchestrator, repeat, only, counts)
                if dsn is not None and statements:
                    print(await top_statements(dsn, statements))
        finally:
            await orchestrator.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


async def statement_statistics(url: str) -> str | None:
    """The plain DSN of the database if pg_stat_statements can count its statements."""
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await connection.fetchval("SELECT count(*) FROM pg_stat_statements")
    except asyncpg.PostgresError as exc:
        print(f"(no pg_stat_statements: {exc}; round trips from the driver only)")
        return None
    finally:
        await connection.close()
    return dsn


async def reset_statements(dsn: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SELECT pg_stat_statements_reset()")
    finally:
        await connection.close()


async def top_statements(dsn: str, count: int) -> str:
    """The `count` statements that took the server the most time over the workloads
    (pg_stat_statements, this database): total ms, calls, rows, and the statement."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT total_exec_time, calls, rows, toplevel, query FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY total_exec_time DESC LIMIT $1",
            count,
        )
    finally:
        await connection.close()
    lines = [
        f"  top {count} statements by server time (ms, calls, rows, statement; '>' marks a "
        "statement run inside a function, whose time its caller's includes):"
    ]
    for row in rows:
        query = " ".join(str(row["query"]).split())[:160]
        mark = " " if row["toplevel"] else ">"
        lines.append(
            f"  {row['total_exec_time']:9.1f} {row['calls']:7d} {row['rows']:8d} {mark} {query}"
        )
    return "\n".join(lines)


def throwaway_postgres() -> tuple[str, object]:
    from tests.pg import PostgresServer

    server = PostgresServer(
        "shared_preload_libraries=pg_stat_statements",
        "pg_stat_statements.track_utility=on",
        # (the statements inside `provisioning_settle` too; round trips count the top level)
        "pg_stat_statements.track=all",
    ).start()
    return server.new_database(), server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", help="a database URL (default: embedded SQLite)")
    parser.add_argument(
        "--start-postgres", action="store_true", help="start a throwaway PostgreSQL to use"
    )
    parser.add_argument(
        "--workers", default="1,2,3", help="PostgreSQL: worker counts to run (default: 1,2,3)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workloads", default="w1,w2,w3", help="which to run (default: w1,w2,w3)")
    parser.add_argument(
        "--statements",
        type=int,
        default=0,
        metavar="N",
        help="PostgreSQL: print the N statements that took the server the most time",
    )
    arguments = parser.parse_args()
    only = {name.strip().lower() for name in arguments.workloads.split(",")}
    if not only or not only <= {"w1", "w2", "w3"}:
        parser.error("--workloads: give some of w1, w2, w3, separated by commas")
    counts = [int(n) for n in arguments.workers.split(",")]
    server = None
    database = arguments.database
    if arguments.start_postgres:
        database, server = throwaway_postgres()
    try:
        postmaster = fresh = None
        if server is not None:  # (its first line: the postmaster's pid)
            pid_file = server.data / "postmaster.pid"  # type: ignore[attr-defined]
            postmaster = int(pid_file.read_text().split()[0])
            fresh = server.new_database  # type: ignore[attr-defined]
        uvloop.run(
            main(database, arguments.repeat, counts, only, postmaster, fresh, arguments.statements)
        )
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
