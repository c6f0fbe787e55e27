"""One attempt of a task as its provider sees it: the call the scheduler makes, what an
attempt interrupted by a crash achieved, and what a completed one records for a later
compensation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from orchestrator.store.taskstore import Claim, ResourceWrite
from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    Inventory,
    PermanentProviderError,
    Provider,
    ResourceChange,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Surroundings:
    """What every call of this process shares: the workspace commands run in, and what
    they must not read."""

    workspace: Path
    protected_paths: tuple[Path, ...] = ()


def provider_of(claim: Claim, providers: Mapping[str, Provider]) -> Provider:
    provider = providers.get(claim.provider)
    if provider is None:
        raise PermanentProviderError(
            f"provider instance '{claim.provider}' is not configured "
            f"(configured: {', '.join(sorted(providers)) or 'none'})"
        )
    return provider


def call_provider(
    claim: Claim,
    provider: Provider,
    surroundings: Surroundings,
    inventory: Inventory,
    on_handle: Callable[[JSON], Awaitable[None]] | None,
) -> Awaitable[ActionResult]:
    """Apply, check or compensate (the caller enforces the timeout)."""
    call = action_call(claim, surroundings, inventory, on_handle)
    if claim.compensates is not None:
        return provider.compensate(call, applied(claim))
    if claim.check_mode:
        return provider.check(call)
    return provider.apply(call)


async def finished_attempt(
    claim: Claim,
    providers: Mapping[str, Provider],
    surroundings: Surroundings,
    inventory: Inventory,
) -> ActionResult | None:
    """For an attempt interrupted by a crash: stop what it left running, then return its
    result if its provider knows it completed (None: retry it by the task's policy)."""
    provider = providers.get(claim.provider)
    if provider is None:
        return None
    try:
        if claim.handle:
            await provider.reap(claim.handle)
        if claim.check_mode:
            return None
        return await provider.finished(action_call(claim, surroundings, inventory, None))
    except Exception:
        log.exception("could not recover an interrupted attempt", task_id=claim.task_id)
        return None


def action_call(
    claim: Claim,
    surroundings: Surroundings,
    inventory: Inventory,
    on_handle: Callable[[JSON], Awaitable[None]] | None,
) -> ActionCall:
    return ActionCall(
        task_id=claim.task_id,
        workflow_id=claim.workflow_id,
        instance=claim.provider,
        action=claim.action,
        params=claim.params,
        attempt=claim.attempt,
        timeout=claim.timeout,
        workspace=surroundings.workspace,
        inventory=inventory,
        on_handle=on_handle,
        protected_paths=surroundings.protected_paths,
    )


def applied(claim: Claim) -> ActionResult:
    """What the compensated task's apply returned, as its provider gave it."""
    record = claim.compensation or {}
    result = dict(record.get("result") or {})
    if result.get("reversible") is False:
        raise PermanentProviderError(
            f"irreversible: '{claim.name.removeprefix('undo ')}' ({claim.action}) cannot be undone"
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


def resource_writes(result: ActionResult) -> tuple[ResourceWrite, ...]:
    """The inventory changes a completed attempt reported, as the store writes them."""
    return tuple(
        ResourceWrite(kind=r.kind, name=r.name, op=r.op, status=r.status, data=r.data)
        for r in result.resources
    )
