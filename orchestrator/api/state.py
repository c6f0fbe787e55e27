"""State management (seed 003): workflow progress and snapshots, system metrics,
health and statistics, all read from the store, the event log and the machine."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import psutil
from litestar import Controller, get
from litestar.datastructures import State

from orchestrator.api.controllers import orchestrator_of
from orchestrator.api.schemas import (
    Health,
    Progress,
    Snapshot,
    Statistics,
    SystemLoad,
    SystemMetrics,
)
from orchestrator.clock import utcnow
from orchestrator.errors import NotFound
from orchestrator.http.envelope import Envelope
from orchestrator.rules import ACTIVE_WORKFLOW

TERMINAL = ("Completed", "Failed", "Cancelled")


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover


def machine_load(data_dir: Path) -> SystemLoad:
    """CPU over a tenth of a second, memory in use (MB and %), the data disk's use (%)."""
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(data_dir if data_dir.exists() else Path.cwd()))
    return SystemLoad(
        cpu_usage=psutil.cpu_percent(interval=0.1),
        memory_usage=round((memory.total - memory.available) / 2**20, 1),
        memory_percent=memory.percent,
        disk_usage=disk.percent,
    )


def estimate_remaining(
    timings: list[dict[str, Any]], parallel_limit: int, now: datetime
) -> float | None:
    """Seconds left: the mean observed duration times the work left, spread over the
    parallelism; None until some task has finished."""
    finished = [
        (t["completed_at"] - t["started_at"]).total_seconds()
        for t in timings
        if t["status"] == "Completed" and t["started_at"] and t["completed_at"]
    ]
    if not finished:
        return None
    mean = sum(finished) / len(finished)
    pending = sum(1 for t in timings if t["status"] == "Pending")
    running = [t for t in timings if t["status"] == "Running" and t["started_at"]]
    left_running = sum(max(0.0, mean - (now - t["started_at"]).total_seconds()) for t in running)
    lanes = max(1, min(parallel_limit, pending + len(running)))
    return round(float(pending * mean + left_running) / lanes, 1)


class StateController(Controller):
    path = "/state"
    tags = ["state"]

    @get("/workflows/{workflow_id:str}/progress", summary="A workflow's live progress")
    async def progress(self, state: State, workflow_id: str) -> Envelope[Progress]:
        records = orchestrator_of(state).records
        workflow = await records.workflow(workflow_id)
        if workflow is None:
            raise NotFound(f"workflow '{workflow_id}' not found")
        timings = await records.task_timings(workflow_id)
        total = len(timings)
        done = sum(1 for t in timings if t["status"] in TERMINAL)
        running = [t["name"] for t in timings if t["status"] == "Running"]
        current = running[0] if running else None
        if current is None and done:
            last = max((t for t in timings if t["completed_at"]), key=lambda t: t["completed_at"])
            current = last["name"]
        eta = None
        if workflow["status"] in ACTIVE_WORKFLOW:
            eta = estimate_remaining(timings, workflow["parallel_limit"], utcnow())
        else:
            eta = 0.0
        return Envelope(
            Progress(
                workflow_id=workflow_id,
                status=workflow["status"],
                progress=round(100.0 * done / total, 1) if total else 100.0,
                current_step=current,
                total_steps=total,
                completed_steps=done,
                estimated_time_remaining=eta,
            )
        )

    @get("/workflows/{workflow_id:str}/snapshots", summary="A workflow's states, from the log")
    async def snapshots(self, state: State, workflow_id: str) -> Envelope[list[Snapshot]]:
        records = orchestrator_of(state).records
        if await records.workflow(workflow_id) is None:
            raise NotFound(f"workflow '{workflow_id}' not found")
        tasks: dict[str, str] = {}
        snapshots = []
        for event in await records.events(workflow_id=workflow_id, limit=None):
            data = event.data
            if event.type == "WorkflowSubmitted":
                counts = {"Pending": int(data.get("tasks", 0))}
            if event.type == "TaskStatusChanged" and event.task_id:
                tasks[event.task_id] = data["status"]
                continue
            if event.type not in ("WorkflowSubmitted", "WorkflowStatusChanged"):
                continue
            status = data.get("status", "Pending")
            counts = dict(Counter(tasks.values())) if tasks else counts
            details = {"seq": event.seq, "event": event.type, "tasks": counts}
            if data.get("error"):
                details["error"] = data["error"]
            snapshots.append(
                Snapshot(
                    snapshot_id=f"{workflow_id}:{event.seq}",
                    timestamp=event.at,
                    state=status.lower(),
                    details=details,
                )
            )
        return Envelope(snapshots)

    @get("/system/metrics", summary="Workflow counts and real machine readings")
    async def metrics(self, state: State) -> Envelope[SystemMetrics]:
        orchestrator = orchestrator_of(state)
        counts = await orchestrator.records.workflow_counts()
        load = await anyio.to_thread.run_sync(machine_load, Path(orchestrator.settings.data_dir))
        return Envelope(
            SystemMetrics(
                total_workflows=sum(counts.values()),
                active_workflows=sum(counts[s] for s in ACTIVE_WORKFLOW),
                completed_workflows=counts["Completed"],
                failed_workflows=counts["Failed"],
                running_tasks=orchestrator.scheduler.running,
                queued_tasks=orchestrator.scheduler.queued,
                system_load=load,
            )
        )

    @get("/system/health", summary="Real checks of storage, executor and event pipeline")
    async def health(self, state: State) -> Envelope[Health]:
        orchestrator = orchestrator_of(state)
        components: dict[str, str] = {}
        details: dict[str, str] = {}
        started = time.perf_counter()
        try:
            seq = await orchestrator.records.last_seq()
            components["storage"] = "Healthy"
            details["storage"] = f"answered in {1000 * (time.perf_counter() - started):.1f} ms"
            components["monitoring"] = "Healthy"
            details["monitoring"] = f"event log at seq {seq}"
        except Exception as exc:
            components["storage"] = components["monitoring"] = "Unhealthy"
            details["storage"] = type(exc).__name__
        executor = orchestrator.scheduler
        if not executor.started or not executor.healthy:
            components["batch_coordinator"] = "Unhealthy"
            details["batch_coordinator"] = "the executor is not running"
        else:
            components["batch_coordinator"] = "Healthy"
            details["batch_coordinator"] = (
                f"{executor.running} running, {executor.queued} queued, {executor.commits} commits"
            )
        providers = {
            name: orchestrator.instance_types[name] for name in sorted(orchestrator.providers)
        }
        overall = "Healthy" if all(v == "Healthy" for v in components.values()) else "Unhealthy"
        return Envelope(
            Health(
                overall_status=overall,
                components=components,
                providers=providers,
                last_check=utcnow(),
                details=details,
            )
        )

    @get("/statistics", summary="State manager statistics")
    async def statistics(self, state: State) -> Envelope[Statistics]:
        records = orchestrator_of(state).records
        counts = await records.workflow_counts()
        finished = await records.durations()
        size = await records.database_bytes()
        average = (
            round(sum(d["seconds"] for d in finished) / len(finished), 3) if finished else None
        )
        return Envelope(
            Statistics(
                total_workflows=sum(counts.values()),
                active_snapshots=await records.checkpoint_count(),
                storage_usage=human_bytes(size),
                storage_bytes=size,
                average_workflow_duration=average,
                workflows_by_status=dict(counts),
                rows=await records.row_counts(),
            )
        )
