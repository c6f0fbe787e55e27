#!/usr/bin/env python3
"""Start-up benchmark (issue 20): prints figures, asserts nothing.

    .venv/bin/python tests/perf/bench_startup.py [--runs 5] [--source DIR]

`--source DIR` runs the code of another checkout of the project (`python -m
orchestrator.cli` with DIR as the working directory), with this virtualenv: a before and
after on the same machine.

`provisioning serve` (both apps) runs as a real process on free loopback ports, with its
own data directory (the embedded SQLite database) and the example workspace. Measured,
over `--runs` runs each, as min / median / max:

- `cold`: from starting the process (a fresh data directory: the database is created
  and migrated) until `/health` answers 200 on the orchestrator and on the control
  center;
- `warm`: the same on the data directory the cold start left (schema already current);
- `after kill -9`: SIGKILL to `serve` (no shutdown code runs; the control center must go
  with it), then a new `serve` on the same data directory and ports, until both answer;
- `--help`: `provisioning --help` as a whole process.

Each start's CPU time (user + sys of the `serve` process and its children, read from
/proc while it runs) is printed beside the wall time: on a machine shared with other
work, the CPU time moves less than the wall time. `uptime`'s load is printed first.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROVISIONING = [sys.executable, "-m", "orchestrator.cli"]
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def tree_cpu(pid: int) -> float:
    """User + sys seconds of `pid` and its live children (one level is enough here)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


class Serve:
    def __init__(
        self, source: Path, data_dir: Path, orchestrator: int, control_center: int
    ) -> None:
        self.source = source
        self.ports = (orchestrator, control_center)
        self.env = {
            **os.environ,
            "PROVISIONING_DATA_DIR": str(data_dir),
            "PROVISIONING_SERVER__PORT": str(orchestrator),
            "PROVISIONING_CONTROL_CENTER__PORT": str(control_center),
            "PROVISIONING_WORKSPACE_ROOT": str(source / "examples" / "workspace"),
        }
        self.log = (data_dir.parent / f"{data_dir.name}.log").open("ab")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> tuple[float, float]:
        """Wall and CPU seconds until both apps answer `/health`."""
        began = time.perf_counter()
        self.process = subprocess.Popen(
            [*PROVISIONING, "serve"],
            cwd=self.source,
            env=self.env,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        waiting = set(self.ports)
        deadline = time.monotonic() + 300  # a safety net
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer on {waiting}: see the log")
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}: see the log")
            cpu = tree_cpu(self.process.pid)  # before the process may end the loop
            waiting = {port for port in waiting if not healthy(port)}
            if waiting:
                time.sleep(0.01)
        wall = time.perf_counter() - began
        return wall, max(cpu, tree_cpu(self.process.pid))

    def kill(self) -> None:
        """SIGKILL to the whole service (its process group), as in a crash of the host
        process; then wait (bounded) until both ports are free."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(port_taken(p) for p in self.ports):
            time.sleep(0.01)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def summary(name: str, values: list[float], unit: str = "s") -> str:
    return (
        f"{name:<28} min {min(values):6.3f}{unit}  median {statistics.median(values):6.3f}{unit}"
        f"  max {max(values):6.3f}{unit}  (n={len(values)})"
    )


def timed(command: list[str], source: Path) -> tuple[float, float]:
    began = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, _, usage = os.wait4(process.pid, 0)
    return time.perf_counter() - began, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--source", type=Path, default=REPO, help="the checkout to run")
    args = parser.parse_args()
    source = args.source.resolve()
    print("load:", Path("/proc/loadavg").read_text().split()[:3], "cores:", os.cpu_count())
    figures: dict[str, list[float]] = {}

    def add(name: str, measure: Callable[[], tuple[float, float]]) -> None:
        wall, cpu = measure()
        figures.setdefault(f"{name} wall", []).append(wall)
        figures.setdefault(f"{name} cpu", []).append(cpu)

    root = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        for run in range(args.runs):
            serve = Serve(source, root / f"run{run}", free_port(), free_port())
            try:
                add("serve cold", serve.start)
                serve.stop()
                add("serve warm", serve.start)
                serve.kill()
                add("serve after kill -9", serve.start)
            finally:
                serve.stop()
        for _ in range(args.runs):
            add("provisioning --help", lambda: timed([*PROVISIONING, "--help"], source))
    finally:
        if os.environ.get("BENCH_KEEP"):
            print("kept:", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    for name, values in figures.items():
        print(summary(name, values))
    print("load:", Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    main()
