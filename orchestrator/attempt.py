"""One attempt of a task: the provider call both executors make, and what it records.

Also the rows of a rollback's compensation tasks, which both executors insert when a
workflow fails with rollback enabled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.rollback import DoneTask, plan_compensations
from orchestrator.settings import ExecutorSettings
from orchestrator.store.workflows import get_resource, list_resources, task_row
from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    PermanentProviderError,
    Provider,
    ResourceChange,
)

log = structlog.get_logger(__name__)


class StoreInventory:
    """The `Inventory` a provider instance sees: its own rows of the resources table."""

    def __init__(self, engine: AsyncEngine, provider: str) -> None:
        self._engine = engine
        self._provider = provider

    async def get(self, kind: str, name: str) -> JSON | None:
        row = await get_resource(self._engine, self._provider, kind, name)
        return None if row is None else {**row["data"], "status": row["status"]}

    async def list(self, kind: str) -> list[JSON]:
        rows = await list_resources(self._engine, self._provider, kind)
        return [{**row["data"], "name": row["name"], "status": row["status"]} for row in rows]


@dataclass(frozen=True, slots=True)
class Attempt:
    """What a provider call needs to know about the task being attempted."""

    task_id: str
    name: str
    workflow_id: str
    provider: str
    action: str
    params: JSON
    attempt: int
    timeout: float | None
    check_mode: bool
    compensates: str | None
    compensation: JSON | None

    @classmethod
    def of(cls, row: Mapping[str, Any], check_mode: bool) -> Attempt:
        """The attempt recorded in a task row (its `attempts` is the attempt's number)."""
        return cls(
            task_id=row["id"],
            name=row["name"],
            workflow_id=row["workflow_id"],
            provider=row["provider"],
            action=row["action"],
            params=row["params"],
            attempt=row["attempts"],
            timeout=row["timeout"],
            check_mode=check_mode,
            compensates=row["compensates"],
            compensation=row["compensation"],
        )


async def call_provider(
    attempt: Attempt,
    providers: Mapping[str, Provider],
    *,
    engine: AsyncEngine,
    workspace: Path,
    on_handle: Callable[[JSON], Awaitable[None]],
    enforce_timeout: bool = True,
    protected_paths: tuple[Path, ...] = (),
) -> ActionResult:
    """Apply, check or compensate, within the task's timeout (TimeoutError past it,
    unless the caller enforces it itself)."""
    provider = providers.get(attempt.provider)
    if provider is None:
        raise PermanentProviderError(
            f"provider instance '{attempt.provider}' is not configured "
            f"(configured: {', '.join(sorted(providers)) or 'none'})"
        )
    call = _action_call(attempt, engine, workspace, on_handle, protected_paths)
    if attempt.compensates is not None:
        work = provider.compensate(call, applied(attempt))
    elif attempt.check_mode:
        work = provider.check(call)
    else:
        work = provider.apply(call)
    if attempt.timeout is None or not enforce_timeout:
        return await work
    async with asyncio.timeout(attempt.timeout):
        return await work


async def finished_attempt(
    attempt: Attempt,
    providers: Mapping[str, Provider],
    handle: JSON | None,
    *,
    engine: AsyncEngine,
    workspace: Path,
    protected_paths: tuple[Path, ...] = (),
) -> ActionResult | None:
    """For an attempt interrupted by a crash: stop what it left running, then return its
    result if its provider knows it completed (None: retry it by the task's policy)."""
    provider = providers.get(attempt.provider)
    if provider is None:
        return None
    try:
        if handle:
            await provider.reap(handle)
        if attempt.check_mode:
            return None
        call = _action_call(attempt, engine, workspace, None, protected_paths)
        return await provider.finished(call)
    except Exception:
        log.exception("could not recover an interrupted attempt", task_id=attempt.task_id)
        return None


def _action_call(
    attempt: Attempt,
    engine: AsyncEngine,
    workspace: Path,
    on_handle: Callable[[JSON], Awaitable[None]] | None,
    protected_paths: tuple[Path, ...],
) -> ActionCall:
    return ActionCall(
        task_id=attempt.task_id,
        workflow_id=attempt.workflow_id,
        instance=attempt.provider,
        action=attempt.action,
        params=attempt.params,
        attempt=attempt.attempt,
        timeout=attempt.timeout,
        workspace=workspace,
        inventory=StoreInventory(engine, attempt.provider),
        on_handle=on_handle,
        protected_paths=protected_paths,
    )


def applied(attempt: Attempt) -> ActionResult:
    """What the compensated task's apply returned, as its provider gave it."""
    record = attempt.compensation or {}
    result = dict(record.get("result") or {})
    if result.get("reversible") is False:
        raise PermanentProviderError(
            f"irreversible: '{attempt.name.removeprefix('undo ')}' ({attempt.action}) cannot be "
            "undone"
        )
    resources = tuple(ResourceChange(**r) for r in result.pop("resources", []))
    result.pop("reversible", None)
    return ActionResult(output=record.get("output") or "", result=result, resources=resources)


def result_record(result: ActionResult) -> JSON:
    """A completed task's `result` column: what a later compensation is given back."""
    return {
        **result.result,
        "reversible": result.reversible,
        "resources": [
            {"kind": r.kind, "name": r.name, "op": r.op, "status": r.status, "data": r.data}
            for r in result.resources
        ],
    }


def compensation_rows(
    done: Sequence[DoneTask],
    workflow_id: str,
    first_position: int,
    settings: ExecutorSettings,
    new_id: Callable[[], str],
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """The task rows and (task, depends on, kind) edges undoing `done`."""
    specs = plan_compensations(done)
    ids = {spec.name: new_id() for spec in specs}
    rows = [
        task_row(spec, ids[spec.name], workflow_id, first_position + i, settings)
        for i, spec in enumerate(specs)
    ]
    edges = [(ids[spec.name], ids[d], "soft") for spec in specs for d in spec.soft_dependencies]
    return rows, edges
