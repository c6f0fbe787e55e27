#!/usr/bin/env python3
"""Executor benchmarks: prints figures, asserts nothing.

    .venv/bin/python tests/perf/bench_executor.py [--repeat N] [--workloads w1,w2,w3]
    .venv/bin/python tests/perf/bench_executor.py --database postgresql+asyncpg://… [--workers 1,3]
    .venv/bin/python tests/perf/bench_executor.py --start-postgres [--workers 1,3]

Every transition is persisted (SQLite WAL, synchronous=NORMAL, unless --database says
otherwise), on the event loop `serve` and `worker` run on (uvloop), as in production.
On PostgreSQL the workloads run once per worker count: that many `provisioning worker`
processes claim the tasks, while this process submits and waits like an API-only
`serve --no-worker` (`--start-postgres` starts a throwaway PostgreSQL 15 cluster, as the
tests do, and upgrades a fresh database in it).

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
from collections.abc import Iterator
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
def workers(count: int, environ: dict[str, str]) -> Iterator[None]:
    """`count` `provisioning worker` processes, each with its own data directory."""
    processes = []
    logs = []
    try:
        for n in range(count):
            data_dir = tempfile.mkdtemp(prefix=f"bench-worker-{n}-")
            log = open(Path(data_dir) / "worker.log", "w+b")  # noqa: SIM115
            logs.append(log)
            env = {**os.environ, **environ, "PROVISIONING_DATA_DIR": data_dir}
            env["PROVISIONING_SERVER__LOG_LEVEL"] = "warning"
            processes.append(
                subprocess.Popen(
                    [str(Path(sys.executable).parent / "provisioning"), "worker"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for process, log in zip(processes, logs, strict=True):
            deadline = time.monotonic() + 30
            while b"provisioning worker" not in Path(log.name).read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(Path(log.name).read_text())
                time.sleep(0.05)
        yield
    finally:
        for process in processes:
            process.terminate()
        for process, log in zip(processes, logs, strict=False):
            process.wait(30)
            log.close()
            shutil.rmtree(Path(log.name).parent, ignore_errors=True)


async def workloads(orchestrator: Orchestrator, repeat: int, only: set[str]) -> None:
    if "w1" in only:
        w1 = min([await run_workflow(orchestrator, fan_out(1000), 8) for _ in range(repeat)])
        print(f"W1 fan-out 1->1000->1, limit 8: {1002 / w1:,.0f} tasks/s ({w1 * 1000:.0f} ms)")
    if "w2" in only:
        w2 = min([await run_workflow(orchestrator, chain(200), 8) for _ in range(repeat)])
        print(f"W2 chain of 200: {w2 * 1000 / 199:.2f} ms per hop ({w2 * 1000:.0f} ms)")
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


async def main(database: str | None, repeat: int, worker_counts: list[int], only: set[str]) -> None:
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
            f"W1, W2: best of {repeat} runs; W3: {repeat} pairs with make"
        )
        try:
            await workloads(orchestrator, repeat, only)
        finally:
            await orchestrator.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
        return
    engine = create_engine(settings)
    await upgrade(engine)
    await engine.dispose()
    for count in worker_counts:
        print(
            f"store: postgresql, {count} worker process(es); "
            f"W1, W2: best of {repeat} runs; W3: {repeat} pairs with make"
        )
        orchestrator = Orchestrator(settings, run_tasks=False, background=False)
        await orchestrator.start()
        freeze_startup_heap()
        try:
            with workers(count, {k: v for k, v in environ.items() if k != "PROVISIONING_DATA_DIR"}):
                await workloads(orchestrator, repeat, only)
        finally:
            await orchestrator.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def throwaway_postgres() -> tuple[str, object]:
    from tests.postgres.server import PostgresServer

    server = PostgresServer().start()
    return server.new_database(), server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", help="a database URL (default: embedded SQLite)")
    parser.add_argument(
        "--start-postgres", action="store_true", help="start a throwaway PostgreSQL to use"
    )
    parser.add_argument("--workers", default="1,3", help="PostgreSQL: worker counts to run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workloads", default="w1,w2,w3", help="which to run (default: w1,w2,w3)")
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
        uvloop.run(main(database, arguments.repeat, counts, only))
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
