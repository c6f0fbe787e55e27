"""The names webhooks use for log events (`task.completed`, `workflow.rolled_back`, …).

Low in the import graph: the settings check endpoints' `events` against `EVENT_NAMES`,
and the store's outbox names the events it writes deliveries for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EVENT_NAMES = (
    "task.started",
    "task.retrying",
    "task.completed",
    "task.failed",
    "task.cancelled",
    "workflow.submitted",
    "workflow.running",
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "workflow.rolling_back",
    "workflow.rolled_back",
    "batch.completed",
    "batch.failed",
    "batch.cancelled",
    "batch.rolled_back",
    "rollback.started",
    "checkpoint.created",
    "checkpoint.deleted",
    "state.restored",
    "resource.created",
    "resource.updated",
    "resource.deleted",
    # Seed 002's, from a deployment workflow's status change (orchestrator/deployment_events.py).
    "deployment_status_changed",
)
#: The types of the log's events (`Event.type`), as the stream's `event_types` filter
#: names them.
EVENT_TYPES = (
    "WorkflowSubmitted",
    "WorkflowStatusChanged",
    "TaskStatusChanged",
    "BatchStatusChanged",
    "ResourceChanged",
    "RollbackStarted",
    "CheckpointCreated",
    "CheckpointDeleted",
    "StateRestored",
)
_SNAKE = {"RollingBack": "rolling_back", "RolledBack": "rolled_back"}
_OTHERS = {
    "WorkflowSubmitted": "workflow.submitted",
    "RollbackStarted": "rollback.started",
    "CheckpointCreated": "checkpoint.created",
    "CheckpointDeleted": "checkpoint.deleted",
    "StateRestored": "state.restored",
}


def webhook_event(kind: str, data: Mapping[str, Any]) -> str | None:
    """The webhook name of a log event of type `kind` (`TaskStatusChanged` with status
    Completed -> `task.completed`); None for events webhooks do not carry."""
    status = str(data.get("status", ""))
    word = _SNAKE.get(status, status.lower())
    if kind == "TaskStatusChanged":
        if data.get("retrying"):
            return "task.retrying"
        return "task.started" if status == "Running" else f"task.{word}"
    if kind == "WorkflowStatusChanged":
        return f"workflow.{word}"
    if kind == "BatchStatusChanged":
        return f"batch.{word}"
    if kind == "ResourceChanged":
        return f"resource.{data.get('op')}d"
    return _OTHERS.get(kind)


def webhook_events(kind: str, data: Mapping[str, Any]) -> list[str]:
    """Every webhook name a log event carries: its own, and `deployment_status_changed`
    beside a deployment workflow's `workflow.*`."""
    name = webhook_event(kind, data)
    names = [] if name is None else [name]
    if kind == "WorkflowStatusChanged" and data.get("kind") == "deployment":
        names.append("deployment_status_changed")
    return names
