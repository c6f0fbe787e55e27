#!/usr/bin/env python3
"""VM benchmark: prints figures, asserts nothing.

    .venv/bin/python tests/perf/bench_vms.py [--counts 1,10] [--repeat 3]

For each count, that many `os: none` VMs (blank 1 GiB disk, 32 MiB, TCG) are created at
once through the API of a real orchestrator process (`POST /api/v1/vms` with `wait:
true`: the answer comes once the create workflow ended, the VM running), then deleted;
beside it, the same work without the orchestrator: `qemu-img create` and QEMU started
directly with the provider's own command line, until its monitor answers that the guest
runs. The difference is the orchestrator's overhead per VM (HTTP, policies, the
workflow's persisted tasks, the scheduler), besides what QEMU itself takes.

For several VMs at once two figures are printed: each VM's wait grows with its
neighbours' (they share the cores with QEMU), so beside the medians' difference the
batch's own cost is given: the slowest VM through the API against the slowest started
directly, divided by the count (what the orchestrator adds per VM to the whole batch).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from providers.qemu._config import parse_config  # noqa: E402
from providers.qemu._images import Image  # noqa: E402
from providers.qemu._machine import DISK, Definition, Machine  # noqa: E402
from tests.servers import OrchestratorProcess  # noqa: E402
from tests.vms import guest  # noqa: E402

BODY = {"name": "bench", "cpu": 1, "memory": 32, "disk": 1, "os": "none"}


def through_api(server: OrchestratorProcess, count: int) -> list[float]:
    """Seconds from each POST to its VM running (all `count` sent at once)."""
    with server.client() as client:
        client.timeout = 600

        def one(_: int) -> tuple[float, str]:
            began = time.perf_counter()
            response = client.post("/api/v1/vms", json={**BODY, "wait": True})
            took = time.perf_counter() - began
            assert response.status_code == 201, response.text
            vm = response.json()["data"]
            assert vm["status"] == "running", vm
            return took, vm["id"]

        with ThreadPoolExecutor(count) as pool:
            done = list(pool.map(one, range(count)))
        with ThreadPoolExecutor(count) as pool:
            list(
                pool.map(
                    lambda vm: client.delete(f"/api/v1/vms/{vm[1]}", params={"wait": "true"}),
                    done,
                )
            )
    return [took for took, _ in done]


async def directly(root: Path, count: int) -> list[float]:
    """Seconds to make each disk and start each QEMU by hand (all `count` at once)."""
    config = parse_config({"vm_dir": str(root)})

    async def one(index: int) -> float:
        machine = Machine(root / f"direct-{index}")
        machine.root.mkdir(parents=True)
        began = time.perf_counter()
        made = await asyncio.create_subprocess_exec(
            "qemu-img", "create", "-q", "-f", "qcow2", str(machine.path(DISK)), "1G"
        )
        await made.wait()
        machine.define(Definition(id=machine.id, name="bench", cpu=1, memory=32, disk=1, os="none"))
        running = await machine.launch(config, "tcg", Image("none"))
        took = time.perf_counter() - began
        await machine.kill(running)
        return took

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def summary(figures: list[float]) -> str:
    ms = sorted(f * 1000 for f in figures)
    return f"median {statistics.median(ms):7.0f} ms   max {ms[-1]:7.0f} ms"


def _slowest(figures: list[float], count: int) -> float:
    """The median over the runs of each run's slowest VM (the batch's wall time)."""
    runs = [figures[i : i + count] for i in range(0, len(figures), count)]
    return statistics.median(max(run) for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="1,10")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        # The test operator may have any number of VMs here (the quota has its tests).
        env = {"PROVISIONING_VMS__QUOTA_PER_USER": "0"}
        server = OrchestratorProcess(Path(tmp) / "data", env=env).start()
        try:
            through_api(server, 1)  # warm up: the first request pays imports and caches
            for count in counts:
                api: list[float] = []
                raw: list[float] = []
                for run in range(args.repeat):
                    api += through_api(server, count)
                    raw += asyncio.run(directly(Path(tmp) / f"direct-{count}-{run}", count))
                overhead = statistics.median(api) - statistics.median(raw)
                print(f"{count:3d} VM(s) at once, {args.repeat} runs")
                print(f"    POST -> running  {summary(api)}")
                print(f"    QEMU directly    {summary(raw)}")
                print(f"    overhead         {overhead * 1000:7.0f} ms per VM (medians)")
                if count > 1:
                    batch = (_slowest(api, count) - _slowest(raw, count)) / count
                    print(f"    batch overhead   {batch * 1000:7.0f} ms per VM (slowest, / count)")
        finally:
            server.stop()
            guest.kill_all(Path(tmp) / "data" / "vms")  # what a failed run left


if __name__ == "__main__":
    main()
