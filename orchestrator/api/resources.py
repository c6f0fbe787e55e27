"""The inventory: what providers created or changed, one row per item (`GET /resources`),
and deleting it (`POST /resources/destroy`): a workflow of the compensations of the
work that created each item, planned and confirmed like a rollback."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from orchestrator.api.controllers import orchestrator_of, security_of
from orchestrator.api.redaction import redact
from orchestrator.api.schemas import DestroyIn, DestroyOut, ResourceOut
from orchestrator.api.security import user_of
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.http.envelope import Envelope
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers
from orchestrator.plan import PlanEntry, counted
from orchestrator.planner import infra_items
from orchestrator.resources import Catalog
from orchestrator.rules import DoneTask, plan_compensations
from orchestrator.service import Orchestrator
from orchestrator.specs import WorkflowSpec
from orchestrator.workspace import load_infra


def policy_name(row: dict[str, Any], catalog: Catalog) -> str | None:
    """The name policies give the row's item (`vms:<id>`), if its kind is declared."""
    kind = next((k for k in catalog.kinds(row["provider"]) if k.name == row["kind"]), None)
    return None if kind is None else f"{kind.plural}:{row['name']}"


async def readable(
    request: Request[Any, Any, Any], rows: list[dict[str, Any]], catalog: Catalog
) -> list[dict[str, Any]]:
    """The rows whose items the caller may read, as its owner's policies say (the
    default `vm_privacy_policy` keeps other users' VMs out of sight)."""
    items = [(policy_name(row, catalog) or f"resources:{row['id']}", row["owner"]) for row in rows]
    allowed = await security_of(request).allows_each(request.scope, "read", items)
    return [row for row, ok in zip(rows, allowed, strict=True) if ok]


def resource_out(row: dict[str, Any], catalog: Catalog) -> ResourceOut:
    return ResourceOut(
        id=row["id"],
        provider=row["provider"],
        kind=row["kind"],
        name=row["name"],
        status=row["status"],
        resource=policy_name(row, catalog),
        owner=row["owner"],
        workflow_id=row["workflow_id"],
        task_id=row["task_id"],
        data=redact(row["data"] or {}),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class ResourceController(Controller):
    path = "/resources"
    tags = ["resources"]

    @get("/", summary="List the inventory, by provider instance, kind and name")
    async def list(
        self,
        state: State,
        request: Request[Any, Any, Any],
        kind: str | None = None,
        provider: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[ResourceOut]]]:
        check_page(limit, offset)
        orchestrator = orchestrator_of(state)
        catalog = orchestrator.catalog
        every = await orchestrator.records.resources(kind=kind, provider=provider)
        rows = await readable(request, every, catalog)
        return Response(
            Envelope([resource_out(r, catalog) for r in rows[offset : offset + limit]]),
            headers=page_headers(request, len(rows), limit, offset),
        )

    @get("/{resource_id:str}", summary="One inventory row")
    async def show(
        self, state: State, request: Request[Any, Any, Any], resource_id: str
    ) -> Envelope[ResourceOut]:
        orchestrator = orchestrator_of(state)
        row = await orchestrator.records.resource(resource_id)
        # An item the caller may not read is not found, as if it did not exist.
        if row is None or not await readable(request, [row], orchestrator.catalog):
            raise NotFound(f"resource '{resource_id}' not found")
        return Envelope(resource_out(row, orchestrator.catalog))

    @post(
        "/destroy",
        status_code=HTTP_202_ACCEPTED,
        summary="Delete recorded resources by undoing the work that created them",
        description="Every resource an infra declares that the inventory holds (`infra`), "
        "or the named ones (`names`, narrowed by `kind` and `provider`), deleted by a "
        "workflow of compensations, newest work first. Each needs `delete` on its policy "
        "name. The answer is the plan and the workflow's id (none with `check_mode`, or "
        "when nothing can be deleted; then 200); resources that cannot be deleted this "
        "way are entries with `skipped: true` and a `note`.",
    )
    async def destroy(
        self, state: State, request: Request[Any, Any, Any], data: DestroyIn
    ) -> Response[Envelope[DestroyOut]]:
        orchestrator = orchestrator_of(state)
        rows = await _targets(orchestrator, request, data)
        catalog = orchestrator.catalog
        keys = [(r["provider"], r["kind"], r["name"]) for r in rows]
        work = await orchestrator.records.undoable_for(keys)
        entries, done = _deletion(rows, work, catalog)
        spec = None
        if done:
            spec = WorkflowSpec(
                kind="destroy",
                name=_name(data),
                tasks=plan_compensations(done),
                request=msgspec.to_builtins(data),
            )
        items = [("delete", e.resource) for e in entries if not e.skipped and e.resource]
        items += [] if spec is None else catalog.host_items(spec)
        await security_of(request).authorize_items(request.scope, sorted(set(items)))
        workflow_id = status = None
        if spec is not None and not data.check_mode:
            workflow_id = await orchestrator.submit(spec, owner=user_of(request.scope))
            if data.wait:
                await orchestrator.wait(workflow_id, orchestrator.settings.server.wait_timeout)
            workflow = await orchestrator.records.workflow(workflow_id)
            status = workflow["status"] if workflow else "Pending"
        plan = counted(workflow_id, status or "Planned", entries)
        return Response(
            Envelope(DestroyOut(workflow_id, plan)),
            status_code=HTTP_200_OK if workflow_id is None else HTTP_202_ACCEPTED,
        )


def _name(data: DestroyIn) -> str:
    if data.infra is not None:
        return f"destroy {data.infra}"
    return f"delete {data.kind or 'resources'} {', '.join(data.names or [])}"[:200]


async def _targets(
    orchestrator: Orchestrator, request: Request[Any, Any, Any], data: DestroyIn
) -> list[dict[str, Any]]:
    """The inventory rows to delete, as the caller may see them; the named ones must all
    exist (and be one item each)."""
    if data.infra is None and not data.names:
        raise InvalidInput("give infra (every resource it declares) or names (which ones)")
    every = await orchestrator.records.resources(kind=data.kind, provider=data.provider)
    rows = await readable(request, every, orchestrator.catalog)
    if data.infra is not None:
        infra = load_infra(orchestrator.settings.workspace, data.infra, data.settings)
        declared = set(infra_items(orchestrator.catalog, infra))
        rows = [r for r in rows if (r["provider"], r["kind"], r["name"]) in declared]
    if not data.names:
        return rows
    chosen = []
    what = data.kind or "resource"
    for name in data.names:
        found = [r for r in rows if r["name"] == name]
        if not found:
            raise NotFound(
                f"{what} '{name}' is not in the inventory"
                + (f" of infra '{data.infra}'" if data.infra else "")
                + "; see: provisioning resources list"
            )
        if len(found) > 1:
            places = ", ".join(f"{r['kind']} on {r['provider']}" for r in found)
            raise InvalidInput(f"names: '{name}' is {places}; name the kind and provider")
        chosen += found
    return chosen


def _deletion(
    rows: list[dict[str, Any]],
    work: dict[tuple[str, str, str], list[DoneTask]],
    catalog: Catalog,
) -> tuple[list[PlanEntry], list[DoneTask]]:
    """The plan's entries (a delete per row, and per other item the same work made) and
    the work to undo; a row no undoable work made, or made irreversibly, is an entry
    marked not reversible with the reason, and nothing of it is undone."""
    entries: list[PlanEntry] = []
    done: dict[str, DoneTask] = {}
    for row in rows:
        key = (row["provider"], row["kind"], row["name"])
        tasks = work.get(key, [])
        why = None
        if not tasks:
            why = (
                "no completed work left to undo made it (an undo, or work already undone "
                "or pruned made it); delete it with its provider's delete operation"
            )
        else:
            stuck = [t for t in tasks if not _reversible(t, catalog)]
            if stuck:
                why = f"'{stuck[0].name}' ({stuck[0].action}) cannot be undone"
        if why is None:
            done.update((t.id, t) for t in tasks)
        entries.append(_entry(row, catalog, tasks[-1].name if tasks else "-", why))
    seen = {(e.provider, e.kind, e.name) for e in entries}
    for task in done.values():
        for change in (task.result or {}).get("resources") or []:
            key = (task.provider, change.get("kind"), change.get("name"))
            if change.get("op") == "create" and key not in seen:
                seen.add(key)
                other = {"provider": key[0], "kind": key[1], "name": key[2], "id": None}
                entry = _entry(other, catalog, task.name, None)
                entry.note = f"made by the same work as what is deleted ({task.name})"
                entries.append(entry)
    return entries, list(done.values())


def _reversible(task: DoneTask, catalog: Catalog) -> bool:
    declared = catalog.by_action(task.provider, task.action)
    if declared is not None and declared.operation.undo is None:
        return False
    return (task.result or {}).get("reversible") is not False


def _entry(row: dict[str, Any], catalog: Catalog, task: str, why: str | None) -> PlanEntry:
    return PlanEntry(
        action="delete",
        provider=row["provider"],
        kind=row["kind"],
        name=row["name"],
        resource=policy_name(row, catalog),
        resource_id=row["id"],
        task=f"undo {task}",
        skipped=why is not None,
        note=why,
    )
