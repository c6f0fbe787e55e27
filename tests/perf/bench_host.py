#!/usr/bin/env python3
"""Host benchmarks (issue 15): prints figures, asserts nothing.

    .venv/bin/python tests/perf/bench_host.py metrics [--subscribers 50] [--seconds 30]
    .venv/bin/python tests/perf/bench_host.py logs [--entries 1000000] [--repeat 20]

`metrics`: a real orchestrator serves `/ws/metrics` to `--subscribers` WebSockets at one
sample a second (this process reads them all); after a warm-up, the server process's CPU
time (psutil) over `--seconds` is printed as a share of one core, with the messages
received (target: at most 5 % of one core for 50 subscribers).

`logs`: a journal of `--entries` entries is written with Debian's `systemd-journal-remote`
from the journal's export format, as tests/host does (kept under `--cache` and reused by
later runs; systemd 252 writes a million entries as two files of one directory), and a
real orchestrator with a `host` instance reading it (`journal.directory`) answers
`GET /logs` filtered pages: each query's first time and the median and worst of the
`--repeat` - 1 after it, in a fresh server after one request of its own (target: at most
200 ms for a filtered page). The count is read from the journal files' indexes; where
that reader gives up, journalctl walks the matches and a filter's count is kept, so
"first" and "then" differ (docs/host.md).

The machine is shared: the load average (`os.getloadavg`) is printed beside each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402
import websockets  # noqa: E402

from tests.host.journal import REMOTE  # noqa: E402
from tests.servers import OrchestratorProcess  # noqa: E402

START = datetime(2025, 8, 1, tzinfo=UTC)
UNITS = [f"svc{i:02d}" for i in range(16)] + ["sshd"]  # 17: every unit meets every priority
PRIORITY_CYCLE = (6, 6, 6, 5, 4, 3, 6, 7)  # mostly info; some notice, warning, error, debug


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


# -- /ws/metrics --------------------------------------------------------------------------


async def _subscriber(url: str, token: str, counts: list[int], index: int) -> None:
    async with websockets.connect(url, max_queue=None) as ws:
        await ws.send(json.dumps({"type": "auth", "payload": {"token": token}}))
        await ws.send(json.dumps({"type": "subscribe"}))
        async for _ in ws:
            counts[index] += 1


async def _metrics(server: OrchestratorProcess, subscribers: int, seconds: float) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws/metrics?interval=1"
    counts = [0] * subscribers
    tasks = [
        asyncio.create_task(_subscriber(url, server.token, counts, i)) for i in range(subscribers)
    ]
    assert server.process is not None
    process = psutil.Process(server.process.pid)
    while sum(1 for c in counts if c) < subscribers:  # every one subscribed
        await asyncio.sleep(0.1)
        for task in tasks:
            if task.done() and task.exception():
                raise task.exception()  # type: ignore[misc]
    await asyncio.sleep(3)  # warm-up
    print(f"  before: {load()}")
    received = sum(counts)
    cpu = process.cpu_times()
    started = time.monotonic()
    await asyncio.sleep(seconds)
    spent = time.monotonic() - started
    after = process.cpu_times()
    used = (after.user - cpu.user) + (after.system - cpu.system)
    messages = sum(counts) - received
    print(
        f"  /ws/metrics, {subscribers} subscribers at 1 sample/s over {spent:.1f} s: "
        f"server CPU {100 * used / spent:.2f} % of one core "
        f"(user {after.user - cpu.user:.2f} s, system {after.system - cpu.system:.2f} s); "
        f"{messages / spent:.0f} messages/s received "
        f"(expected {subscribers * 4}/s); {load()}"
    )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def metrics(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-host-") as tmp:
        server = OrchestratorProcess(
            Path(tmp) / "data",
            env={
                "PROVISIONING_SERVER__WS_CONNECTIONS_PER_USER": str(args.subscribers + 10),
                "PROVISIONING_SERVER__LOG_LEVEL": "warning",
            },
        ).start()
        try:
            asyncio.run(_metrics(server, args.subscribers, args.seconds))
        finally:
            server.stop()


# -- GET /logs ----------------------------------------------------------------------------


def _export(path: Path, entries: int) -> None:
    """The journal's export format: entry i one second after entry i-1, the units in
    turn, priorities mostly info. Messages and pids come from pools of a few thousand:
    systemd 252's journal-remote (Debian 12) starts a new file once a file holds about
    150,000 distinct field values, and has no setting to raise that."""
    base = int(START.timestamp() * 1_000_000)
    with path.open("w") as out:
        for i in range(entries):
            unit = UNITS[i % len(UNITS)]
            out.write(
                f"__REALTIME_TIMESTAMP={base + i * 1_000_000}\n"
                f"__MONOTONIC_TIMESTAMP={1_000_000 + i}\n"
                "_BOOT_ID=0123456789abcdef0123456789abcdef\n"
                f"MESSAGE=request {i % 4999} handled by {unit}\n"
                f"PRIORITY={PRIORITY_CYCLE[i % len(PRIORITY_CYCLE)]}\n"
                f"_SYSTEMD_UNIT={unit}.service\n"
                f"SYSLOG_IDENTIFIER={unit}\n"
                "_HOSTNAME=bench-host\n"
                f"_PID={1000 + i % 5003}\n\n"
            )


def journal(cache: Path, entries: int) -> Path:
    """The directory of the journal files (journal-remote of systemd 252 closes a file at
    128 MB and goes on in a new one: a million entries make two)."""
    target = cache / f"bench-{entries}"
    if target.is_dir():
        return target
    partial = cache / f"bench-{entries}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    source = cache / f"bench-{entries}.export"
    started = time.monotonic()
    _export(source, entries)
    subprocess.run([str(REMOTE), f"--output={partial / 'bench.journal'}", str(source)], check=True)
    partial.rename(target)
    source.unlink()
    files = len(list(target.glob("*.journal")))
    print(
        f"  wrote {entries:,} entries to {target} ({files} files) in "
        f"{time.monotonic() - started:.0f} s"
    )
    return target


QUERIES = {
    "unit + priority, page 1": {"service": "sshd", "priority": "warning", "page_size": 100},
    "unit, page 5": {"service": "svc03", "page": 5, "page_size": 100},
    "priority error, page 1": {"priority": "error", "page_size": 100},
    "unit + one day": {
        "service": "sshd",
        "since": (START + timedelta(days=3)).isoformat(),
        "until": (START + timedelta(days=4)).isoformat(),
        "page_size": 100,
    },
    "unfiltered, page 1": {"page_size": 100},
}


def logs(args: argparse.Namespace) -> None:
    path = journal(Path(args.cache), args.entries)
    with tempfile.TemporaryDirectory(prefix="bench-host-") as tmp:
        server = OrchestratorProcess(
            Path(tmp) / "data",
            env={
                "PROVISIONING_PROVIDERS__HOST__TYPE": "host",
                "PROVISIONING_PROVIDERS__HOST__JOURNAL__DIRECTORY": str(path),
                "PROVISIONING_SERVER__LOG_LEVEL": "warning",
            },
        ).start()
        try:
            with server.client() as http:
                http.timeout = httpx.Timeout(300)
                # The server's first request pays for what it loads once (the host
                # provider, the policy): a filter of no match, timed apart.
                started = time.perf_counter()
                answer = http.get("/logs", params={"service": "warm-up", "page_size": 1})
                assert answer.status_code == 200, answer.text
                first = time.perf_counter() - started
                print(f"  the server's first GET /logs: {1000 * first:.0f} ms")
                for name, query in QUERIES.items():
                    times, total = [], None
                    for _ in range(args.repeat):
                        started = time.perf_counter()
                        answer = http.get("/logs", params=query)
                        times.append(time.perf_counter() - started)
                        assert answer.status_code == 200, answer.text
                        total = answer.json()["data"]["total_count"]
                    then = times[1:] or times
                    print(
                        f"  GET /logs {name} ({total:,} matches of {args.entries:,}): "
                        f"first {1000 * times[0]:.0f} ms, then median "
                        f"{1000 * statistics.median(then):.0f} ms, worst "
                        f"{1000 * max(then):.0f} ms over {len(then)}; {load()}"
                    )
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    m = sub.add_parser("metrics", help="/ws/metrics with many subscribers")
    m.add_argument("--subscribers", type=int, default=50)
    m.add_argument("--seconds", type=float, default=30.0)
    lg = sub.add_parser("logs", help="GET /logs over a large journal file")
    lg.add_argument("--entries", type=int, default=1_000_000)
    lg.add_argument("--repeat", type=int, default=20)
    lg.add_argument("--cache", default="/var/tmp/provisioning-bench-host")
    args = parser.parse_args()
    print(f"bench_host {args.bench} on {os.cpu_count()} cores; {load()}")
    metrics(args) if args.bench == "metrics" else logs(args)


if __name__ == "__main__":
    main()
