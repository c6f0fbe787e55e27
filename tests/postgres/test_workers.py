"""Three `provisioning worker` processes and an API-only `serve` on one PostgreSQL
database: 5,000 `local` tasks across 50 workflows, each appending its name to one file.

While they run, a sampler reads the running tasks from the database: the global,
per-workflow and per-provider limits hold across the workers. One worker is killed
with SIGKILL a third of the way through; the others recover its leased tasks once the
lease expires and finish everything. Every name is in the file exactly once: the
commands run with `record_exit` (the default, said here anyway), so an attempt that
finished while its worker was dead is recorded from its exit status rather than run
again, and one that had not finished is stopped and retried.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import subprocess
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.servers import PROVISIONING, REPO, OrchestratorProcess

WORKFLOWS = 50
TASKS = 100  # per workflow: 10 chains of 10, each chain's head after the previous head
GLOBAL_LIMIT = 16
PARALLEL_LIMIT = 6
PROVIDER_LIMIT = 10
PROVIDERS = ("local", "local2")

CONFIG = f"""
[executor]
global_limit = {GLOBAL_LIMIT}
lease = 5.0
heartbeat = 0.5
poll_interval = 0.5

# Not isolated: what is checked here is exactly-once and the limits, over 5,000
# commands; three processes per command (the isolation) only make it slower.
[providers.local]
type = "local"
max_concurrent = {PROVIDER_LIMIT}
record_exit = true
isolation = "none"

[providers.local2]
type = "local"
max_concurrent = {PROVIDER_LIMIT}
record_exit = true
isolation = "none"
"""


class WorkerProcess:
    """`provisioning worker` with its own data directory (its identity) and log."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir / "worker.log"
        self.env = {**env, "PROVISIONING_DATA_DIR": str(data_dir)}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [PROVISIONING, "worker"], env=self.env, stdout=log, stderr=log, cwd=REPO
            )
        # A safety net, not a measure: a worker imports the providers first, which takes
        # a while on a machine shared with another test run.
        deadline = time.monotonic() + 180
        try:
            # (its banner's last line: the banner is written whole, once started)
            while "\n  metrics " not in self.log():
                assert self.process.poll() is None, self.log()
                assert time.monotonic() < deadline, self.log()
                time.sleep(0.05)
        except BaseException:
            self.kill()  # not left running for the tests after this one
            raise
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(20)


def _before(i: int) -> int:
    """The task that task `i` depends on: the previous one of its chain, or for a chain's
    head the previous chain's head."""
    return i - 1 if i % 10 else i - 10


def _workflow(index: int, out: Path) -> dict:
    tasks = []
    for i in range(TASKS):
        dependencies = [f"t{_before(i):03d}"] if i else []
        tasks.append(
            {
                "name": f"t{i:03d}",
                "provider": PROVIDERS[i % 2],
                "action": "run",
                "params": {
                    "command": "sh",
                    "args": ["-c", f'echo "$1" >> {out}', "sh", f"w{index:02d}-t{i:03d}"],
                },
                "dependencies": dependencies,
                "max_attempts": 3,
                "retry_initial_delay": 0.1,
            }
        )
    return {"name": f"w{index:02d}", "parallel_limit": PARALLEL_LIMIT, "tasks": tasks}


class Sampler(threading.Thread):
    """Reads what is running from the database, as often as it can."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.done = threading.Event()
        self.samples = 0
        self.max_global = 0
        self.max_workflow = 0
        self.max_provider: collections.Counter[str] = collections.Counter()
        self.workers_seen: set[str] = set()

    def run(self) -> None:
        asyncio.run(self._sample())

    async def _sample(self) -> None:
        connection = await asyncpg.connect(self.dsn)
        try:
            while not self.done.is_set():
                rows = await connection.fetch(
                    "SELECT workflow_id, provider, lease_owner FROM tasks WHERE status = 'Running'"
                )
                self.samples += 1
                self.max_global = max(self.max_global, len(rows))
                per_workflow = collections.Counter(r["workflow_id"] for r in rows)
                self.max_workflow = max([self.max_workflow, *per_workflow.values()])
                for provider, n in collections.Counter(r["provider"] for r in rows).items():
                    self.max_provider[provider] = max(self.max_provider[provider], n)
                self.workers_seen.update(r["lease_owner"] for r in rows)
                await asyncio.sleep(0.02)
        finally:
            await connection.close()


@pytest.mark.timeout(900)  # its own waits below are the measure; this is a safety net
def test_three_workers_run_5000_tasks_once_each_under_the_limits_and_survive_a_kill(
    tmp_path, command_dir, database_url
):
    out = command_dir / "ran.txt"  # (the commands write in it)
    config = tmp_path / "provisioning.toml"
    config.write_text(CONFIG)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PROVISIONING_CONFIG": str(config),
        "PROVISIONING_DATABASE_URL": database_url,
        "PROVISIONING_WORKSPACE_ROOT": str(work),
    }
    api = OrchestratorProcess(
        tmp_path / "api", workspace=work, env={**env, "PROVISIONING_SERVER__WORKER": "false"}
    ).start()  # provisions the test operator, which upgrades the database first
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    workers = [
        WorkerProcess(tmp_path / f"worker-{n}", {**os.environ, **env}).start() for n in range(3)
    ]
    sampler = Sampler(dsn)
    sampler.start()
    try:
        with api.client() as http:
            ids = []
            for index in range(WORKFLOWS):
                response = http.post("/workflows", json=_workflow(index, out))
                assert response.status_code == 202, response.text
                ids.append(response.json()["data"])
            deadline = time.monotonic() + 60
            while _lines(out) < WORKFLOWS * TASKS // 3:
                assert time.monotonic() < deadline, "the workers made no progress"
                time.sleep(0.02)
            victim = workers[0]
            assert victim.process is not None
            victim.process.kill()
            victim.process.wait(10)
            killed_at = time.monotonic()
            statuses = _wait_all(http, ids, timeout=180)
        recovered_after = time.monotonic() - killed_at
    finally:
        sampler.done.set()
        sampler.join(10)
        for worker in workers:
            worker.stop()
        api.stop()

    assert set(statuses.values()) == {"Completed"}, collections.Counter(statuses.values())
    names = out.read_text().split()
    expected = {f"w{w:02d}-t{i:03d}" for w in range(WORKFLOWS) for i in range(TASKS)}
    assert set(names) == expected  # none missing, nothing else
    runs = collections.Counter(names)
    assert [name for name, count in runs.items() if count > 1] == []  # exactly once each
    recovered = asyncio.run(_recovered(dsn))
    assert recovered["TaskInterrupted"] + recovered["TaskRecovered"] > 0, (
        "the kill interrupted no attempt: it came too late to test recovery"
    )
    # Order: every task's line comes after its dependency's (first) line.
    first: dict[str, int] = {}
    for position, name in enumerate(names):
        first.setdefault(name, position)
    for w in range(WORKFLOWS):
        for i in range(1, TASKS):
            assert first[f"w{w:02d}-t{i:03d}"] > first[f"w{w:02d}-t{_before(i):03d}"]
    # The limits, from the recorded start and end of every attempt (the event log: a
    # start's event is at its claim's time, an end's at or before its commit) ...
    recorded = asyncio.run(_recorded_concurrency(dsn))
    assert recorded.unclosed == 0
    assert recorded.attempts >= WORKFLOWS * TASKS
    assert recorded.max_global <= GLOBAL_LIMIT, recorded
    assert recorded.max_workflow <= PARALLEL_LIMIT, recorded
    assert all(n <= PROVIDER_LIMIT for n in recorded.max_provider.values()), recorded
    # ... and sampled from the database while all of this ran.
    assert sampler.samples > 50
    assert sampler.max_global <= GLOBAL_LIMIT
    assert sampler.max_global >= GLOBAL_LIMIT // 2, "the run never got parallel"
    assert sampler.max_workflow <= PARALLEL_LIMIT
    assert all(n <= PROVIDER_LIMIT for n in sampler.max_provider.values()), sampler.max_provider
    assert len(sampler.workers_seen) == 3, sampler.workers_seen
    print(
        f"\n{len(names)} runs of {len(expected)} tasks; the kill left "
        f"{recovered['TaskRecovered']} finished attempts (recorded from their exit status) and "
        f"{recovered['TaskInterrupted']} unfinished ones (retried); "
        f"finished {recovered_after:.1f}s after it; max running {sampler.max_global} "
        f"(limit {GLOBAL_LIMIT}), per workflow {sampler.max_workflow} (limit {PARALLEL_LIMIT}), "
        f"per provider {dict(sampler.max_provider)} (limit {PROVIDER_LIMIT}), "
        f"{sampler.samples} samples; from the recorded times of {recorded.attempts} attempts: "
        f"max running {recorded.max_global}, per workflow {recorded.max_workflow}, "
        f"per provider {dict(recorded.max_provider)}"
    )


@dataclasses.dataclass
class Concurrency:
    """The most attempts that ran at once, from the recorded times."""

    attempts: int = 0
    unclosed: int = 0
    max_global: int = 0
    max_workflow: int = 0
    max_provider: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


async def _recorded_concurrency(dsn: str) -> Concurrency:
    """Every attempt runs from its `Running` event to the next event of its task (its
    end, a retry, a hand-back, or its recovery after a kill); intervals are half-open,
    so an attempt that starts when another ends does not overlap it."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT e.at, e.type, e.task_id, e.data::jsonb ->> 'status' AS status, "
            "t.workflow_id, t.provider FROM events e JOIN tasks t ON t.id = e.task_id "
            "ORDER BY e.seq"
        )
    finally:
        await connection.close()
    started: dict[str, tuple] = {}
    changes: list[tuple] = []  # (at, +1 | -1, workflow, provider)
    result = Concurrency()
    for row in rows:
        task = row["task_id"]
        is_start = row["type"] == "TaskStatusChanged" and row["status"] == "Running"
        if task in started:  # whatever comes next of this task ends its attempt
            begun, workflow, provider = started.pop(task)
            assert row["at"] >= begun, row
            changes += [(begun, 1, workflow, provider), (row["at"], -1, workflow, provider)]
            result.attempts += 1
        if is_start:
            started[task] = (row["at"], row["workflow_id"], row["provider"])
    result.unclosed = len(started)
    running = 0
    per_workflow: collections.Counter[str] = collections.Counter()
    per_provider: collections.Counter[str] = collections.Counter()
    for _, delta, workflow, provider in sorted(changes, key=lambda c: (c[0], c[1])):
        running += delta
        per_workflow[workflow] += delta
        per_provider[provider] += delta
        result.max_global = max(result.max_global, running)
        result.max_workflow = max(result.max_workflow, per_workflow[workflow])
        result.max_provider[provider] = max(result.max_provider[provider], per_provider[provider])
    return result


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _wait_all(http: httpx.Client, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        for workflow_id in ids:
            if statuses.get(workflow_id) in (None, "Pending", "Running", "RollingBack"):
                statuses[workflow_id] = http.get(f"/workflows/{workflow_id}").json()["data"][
                    "status"
                ]
        if all(s not in ("Pending", "Running", "RollingBack") for s in statuses.values()):
            return statuses
        time.sleep(0.2)
    raise TimeoutError(f"not finished: {collections.Counter(statuses.values())}")


async def _recovered(dsn: str) -> collections.Counter[str]:
    """How many attempts the kill left behind, by how they were recovered."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT type, count(*) AS n FROM events "
            "WHERE type IN ('TaskInterrupted', 'TaskRecovered') GROUP BY type"
        )
    finally:
        await connection.close()
    return collections.Counter({r["type"]: r["n"] for r in rows})


def test_a_stopped_worker_hands_its_task_back_without_spending_the_attempt(
    tmp_path, command_dir, database_url
):
    """SIGTERM stops the running command and leaves the task pending, attempt unspent:
    a task with a single attempt is then run to completion by another worker."""
    work = command_dir  # (the commands write in it)
    env = {
        "PROVISIONING_DATABASE_URL": database_url,
        "PROVISIONING_WORKSPACE_ROOT": str(work),
    }
    api = OrchestratorProcess(
        tmp_path / "api", workspace=work, env={**env, "PROVISIONING_SERVER__WORKER": "false"}
    ).start()
    first = WorkerProcess(tmp_path / "first", {**os.environ, **env}).start()
    second = None
    script = f"if [ -e {work}/began ]; then exit 0; fi; touch {work}/began; sleep 60"
    try:
        with api.client() as http:
            body = {
                "name": "handed-back",
                "tasks": [
                    {
                        "name": "once",
                        "provider": "local",
                        "action": "run",
                        "params": {"command": "sh", "args": ["-c", script]},
                        "max_attempts": 1,
                    }
                ],
            }
            workflow_id = http.post("/workflows", json=body).json()["data"]
            deadline = time.monotonic() + 30
            while not (work / "began").exists():
                assert time.monotonic() < deadline, first.log()
                time.sleep(0.05)
            first.stop()  # SIGTERM
            task = http.get("/tasks", params={"workflow_id": workflow_id}).json()["data"][0]
            assert (task["status"], task["attempts"]) == ("Pending", 0), task
            second = WorkerProcess(tmp_path / "second", {**os.environ, **env}).start()
            statuses = _wait_all(http, [workflow_id], timeout=60)
            task = http.get("/tasks", params={"workflow_id": workflow_id}).json()["data"][0]
    finally:
        first.stop()
        if second is not None:
            second.stop()
        api.stop()
    assert statuses[workflow_id] == "Completed"
    assert (task["status"], task["attempts"]) == ("Completed", 1), task


def test_tasks_a_workflow_may_not_start_leave_their_provider_to_others(tmp_path, database_url):
    """Workflow A (parallel_limit 2) runs two slow tasks while its quick tasks wait for
    its limit; they must not hold provider `quick`'s places (max 2) against workflow B."""
    config = tmp_path / "provisioning.toml"
    config.write_text(
        """
[providers.slow]
type = "sim"

[providers.quick]
type = "sim"
max_concurrent = 2
"""
    )
    server = OrchestratorProcess(
        tmp_path / "data",
        workspace=tmp_path,
        env={"PROVISIONING_CONFIG": str(config), "PROVISIONING_DATABASE_URL": database_url},
    ).start()
    try:
        with server.client() as http:
            a = {
                "name": "a",
                "parallel_limit": 2,
                "tasks": [
                    {
                        "name": f"long{i}",
                        "provider": "slow",
                        "action": "noop",
                        "params": {"simulate": {"latency": 4.0}},
                    }
                    for i in range(2)
                ]
                + [{"name": f"q{i}", "provider": "quick", "action": "noop"} for i in range(5)],
            }
            a_id = http.post("/workflows", json=a).json()["data"]
            deadline = time.monotonic() + 10
            while http.get(f"/workflows/{a_id}").json()["data"]["status"] != "Running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            b = {
                "name": "b",
                "tasks": [
                    {"name": f"q{i}", "provider": "quick", "action": "noop"} for i in range(3)
                ],
            }
            started = time.monotonic()
            b_id = http.post("/workflows", json=b).json()["data"]
            statuses = _wait_all(http, [b_id], timeout=30)
            b_took = time.monotonic() - started
            a_status = http.get(f"/workflows/{a_id}").json()["data"]["status"]
    finally:
        server.stop()
    assert statuses[b_id] == "Completed"
    assert a_status == "Running"  # B did not wait for A's slow task
    assert b_took < 3.0, b_took
