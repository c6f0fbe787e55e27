#!/usr/bin/env python3
"""Deployment benchmark: prints figures, asserts nothing.

    .venv/bin/python tests/perf/bench_deployments.py [--replicas 1,10]

Starts the tests' engine (tests/containers/engine.py: a podman service, the
busybox-httpd image in a local registry) and an orchestrator with a `containers`
instance on it. For each replica count: the time from `POST /v1/deployments` to every
replica ready (its workflow Completed: each replica's task ends once its health check
passed), beside the engine's own time for the same containers — `podman run -d` of N
containers, then polling each published port until it answers, as the health checks
do. The overhead is the difference, as a share of the engine's time (issue 14's target:
at most 20 %).

Each count is run `--rounds` times after a warm-up deployment (the service's first
pull with credentials, the client's first look at the engine); `podman ∥` runs the N
containers at once, and the overhead is against the faster of the two podman times.

Figures (2 cores shared with other work, load average 11 to 16; 2026-12-07, 5 rounds):

    replicas   API (s)   podman (s)  podman ∥   overhead
           1  0.44-0.88  0.47-0.75   0.39-0.94  median -3 % (-36 % to +81 %)
          10  1.37-2.54  3.82-4.96   2.07-3.15  -15 % to -42 %

Before (same machine, load near 6): 1 replica 2.3-2.5 s against 0.5 s (+355 % to
+415 %), 10 replicas 8.0-10.8 s against 3.3-5.8 s. `--detail` showed where: aiodocker
asked the engine's `/version` on every new client's first request (podman answers in
~0.3 s; now asked once per socket), a replica not yet ready waited a whole
`period_seconds` before its next check (now re-checked within the period), and each
health check made a TLS context for a plain-HTTP GET (~90 ms under load; now none).
What remains for one replica is the POST's pull with the request's credentials (a
registry round trip, which makes an image that cannot be had a 422 and is kept) and
the noise of a loaded machine; with 10 the replicas start in parallel (the workflow's
limit), which `podman run` one after the other does not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.containers.engine import PASSWORD, USERNAME, Engine
from tests.servers import OrchestratorProcess, free_port, wait_for_workflow

DETAIL = False
HEALTH = {"path": "/", "initial_delay_seconds": 0, "period_seconds": 1, "timeout_seconds": 1}


def through_api(http: httpx.Client, engine: Engine, app: str, replicas: int) -> float:
    started = time.perf_counter()
    wall = datetime.now(UTC)
    response = http.post(
        "/v1/deployments",
        json={
            "app_name": app,
            "image": engine.image,
            "port": 8080,
            "replicas": replicas,
            "health_check": HEALTH,
            "registry_auth": {"username": USERNAME, "password": PASSWORD},
        },
    )
    response.raise_for_status()
    answered = time.perf_counter() - started
    data = response.json()["data"]
    workflow = wait_for_workflow(http, data["workflow_id"], timeout=900)
    took = time.perf_counter() - started
    assert workflow["status"] == "Completed", workflow
    if DETAIL:
        breakdown(http, data["workflow_id"], wall, answered)
    gone = http.delete(f"/v1/deployments/{data['id']}").json()["data"]
    wait_for_workflow(http, gone["workflow_id"], timeout=900)
    return took


def breakdown(http: httpx.Client, workflow_id: str, wall: datetime, answered: float) -> None:
    """Where the time went: the POST (checks and the pull), then each task's wait for
    its start and its run (the replicas': container made, then health checks)."""
    tasks = http.get("/tasks", params={"workflow_id": workflow_id, "limit": 100}).json()["data"]

    def at(value: str) -> float:
        return (datetime.fromisoformat(value.replace("Z", "+00:00")) - wall).total_seconds()

    print(f"    POST answered after {answered:.2f} s", flush=True)
    for task in sorted(tasks, key=lambda t: at(t["started_at"])):
        started, ended = at(task["started_at"]), at(task["completed_at"])
        print(f"    {task['name'][:40]:<40} start {started:6.2f}  end {ended:6.2f}", flush=True)


def direct(engine: Engine, app: str, replicas: int, parallel: bool = False) -> float:
    """`podman run -d` of each container (one after the other, or all at once), then
    each polled until it answers."""
    started = time.perf_counter()
    ports = [free_port() for _ in range(replicas)]
    runs = [
        subprocess.Popen(
            [
                "podman", "--runtime", "runc", "run", "-d", "--name", f"{app}-{index}",
                "--network", "slirp4netns", "-p", f"127.0.0.1:{port}:8080", engine.image,
            ],
            env=engine.env,
            stdout=subprocess.DEVNULL,
        )
        if parallel
        else engine.podman(
            "run", "-d", "--name", f"{app}-{index}", "--network", "slirp4netns",
            "-p", f"127.0.0.1:{port}:8080", engine.image,
        )
        for index, port in enumerate(ports)
    ]  # fmt: skip
    for run in runs:
        if isinstance(run, subprocess.Popen):
            assert run.wait() == 0
    for port in ports:
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1, trust_env=False)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
    took = time.perf_counter() - started
    for index in range(replicas):
        engine.podman("rm", "-f", "-t", "0", f"{app}-{index}")
    return took


def load() -> str:
    """The load averages (1, 5, 15 min), as `uptime` shows them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", default="1,10")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each count")
    parser.add_argument("--detail", action="store_true", help="where the API's time goes")
    arguments = parser.parse_args()
    global DETAIL
    DETAIL = arguments.detail
    counts = [int(n) for n in arguments.replicas.split(",")]
    rounds = arguments.rounds
    engine = Engine().start()
    data = Path(engine.root) / "orchestrator"
    data.mkdir()
    server = OrchestratorProcess(
        data,
        env={
            "PROVISIONING_PROVIDERS__ENGINE__TYPE": "containers",
            "PROVISIONING_PROVIDERS__ENGINE__SOCKET": str(engine.socket),
            "PROVISIONING_PROVIDERS__ENGINE__STOP_TIMEOUT": "1",
            "PROVISIONING_AUTH__RATE_LIMIT_GENERAL": "100000",
        },
    ).start()
    try:
        engine.podman("pull", "--creds", f"{USERNAME}:{PASSWORD}", engine.image)
        with server.client() as http:
            http.timeout = httpx.Timeout(120)
            # A first deployment outside the figures: the service's first pull with
            # credentials and the client's first look at the engine's API version.
            through_api(http, engine, "warm-up", 1)
            print(
                f"{'replicas':>8} {'API (s)':>9} {'podman (s)':>11} {'podman ∥':>9} "
                f"{'overhead':>9}  load (1, 5, 15 min)"
            )
            for count in counts:
                for _ in range(rounds):
                    serial = direct(engine, f"direct{count}", count)
                    together = direct(engine, f"parallel{count}", count, parallel=True)
                    api_time = through_api(http, engine, f"bench{count}", count)
                    engine_time = min(serial, together)
                    overhead = (api_time - engine_time) / engine_time * 100
                    print(
                        f"{count:>8} {api_time:>9.2f} {serial:>11.2f} {together:>9.2f} "
                        f"{overhead:>8.0f}%  {load()}",
                        flush=True,
                    )
    finally:
        server.stop()
        engine.stop()


if __name__ == "__main__":
    main()
