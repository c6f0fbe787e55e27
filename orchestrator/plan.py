"""The plan: what a check-mode workflow would change, per resource, against the inventory
(`GET /workflows/{id}/plan`, `provisioning … --check`), and what deleting recorded
resources would undo (`POST /resources/destroy`).

In check mode a provider's `check` reports the changes it would make as `resources`
(`ResourceChange`s: create, update or delete), recorded in the task's result and never
written to the inventory; one that reports none, without saying there is none
(`result={"change": None}`), is taken to do what its operation declares
(`providers.base.planned_change`). The plan compares each with the inventory row it
names:

- a create of an item the inventory holds with the same values changes nothing; with
  others, it is an update of the fields that differ;
- an update names the fields that differ from the row (none: nothing changes);
- a delete of an item the inventory does not hold changes nothing;
- an entry is irreversible when its task's check says so or its operation declares
  no undo (a rollback could not bring it back);
- a check that failed is an error of the plan (the apply would fail too).

Pure functions over rows: the API reads them, the CLI prints the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from providers.base import planned_change

if TYPE_CHECKING:  # the CLI reads plans without importing the providers
    from orchestrator.resources import Catalog

Action = Literal["create", "update", "delete"]
#: What a task's result keeps beside what the provider returned (`attempt.result_record`).
_BOOKKEEPING = frozenset({"id", "ip"})


class FieldChange(msgspec.Struct):
    old: Any
    new: Any


class PlanEntry(msgspec.Struct, kw_only=True):
    """One resource the work would change."""

    action: Action
    provider: str
    kind: str
    name: str
    #: What policies call it (`servers:web-01`), if its kind is declared.
    resource: str | None = None
    #: Its inventory row, for an update or a delete.
    resource_id: str | None = None
    #: The task that would do it.
    task: str
    #: A create's values (what was asked, besides the name).
    fields: dict[str, Any] = msgspec.field(default_factory=dict)
    #: An update's changed fields.
    changes: dict[str, FieldChange] = msgspec.field(default_factory=dict)
    #: False: a rollback could not undo it.
    reversible: bool = True
    #: True: it cannot be done this way, and is left out of the work (`note`: why).
    skipped: bool = False
    #: Why it is irreversible or skipped; or what else to know.
    note: str | None = None


class PlanError(msgspec.Struct):
    task: str
    error: str


class Plan(msgspec.Struct, kw_only=True):
    """What would change: entries, counts, and the checks that failed."""

    workflow_id: str | None
    #: The workflow's status: a plan is whole once it has ended.
    status: str
    entries: list[PlanEntry]
    create: int
    update: int
    delete: int
    irreversible: int
    #: Entries left out of the work: they cannot be done this way.
    skipped: int
    #: Tasks whose check said nothing would change.
    unchanged: int
    errors: list[PlanError] = msgspec.field(default_factory=list)

    def summary(self) -> str:
        """`Plan: 2 to create, 1 to change, 0 to destroy` (and what is irreversible)."""
        if not self.entries and not self.errors:
            return "No changes: the inventory already matches."
        text = f"Plan: {self.create} to create, {self.update} to change, {self.delete} to destroy"
        if self.irreversible:
            text += f" ({self.irreversible} irreversible)"
        if self.skipped:
            text += f"; {self.skipped} cannot be deleted"
        if self.errors:
            text += f"; {len(self.errors)} failed to plan"
        return text


def symbol(entry: PlanEntry) -> str:
    """`+` create, `~` update, `-` delete, `!` irreversible."""
    if entry.skipped or not entry.reversible:
        return "!"
    return {"create": "+", "update": "~", "delete": "-"}[entry.action]


def line(entry: PlanEntry) -> str:
    """`+ create server web-01 (plan=1xCPU-2 GB, zone=de-fra1)`, one entry as text."""
    text = f"{symbol(entry)} {entry.action} {entry.kind} {entry.name}"
    if entry.changes:
        text += ": " + ", ".join(
            f"{key} {change.old} -> {change.new}" for key, change in entry.changes.items()
        )
    elif entry.fields:
        text += " (" + ", ".join(f"{k}={v}" for k, v in entry.fields.items()) + ")"
    if entry.skipped:
        text += f" [cannot be done: {entry.note}]"
    elif not entry.reversible:
        text += f" [irreversible: {entry.note or 'it has no undo'}]"
    elif entry.note:
        text += f" [{entry.note}]"
    return text


def counted(workflow_id: str | None, status: str, entries: list[PlanEntry], **rest: Any) -> Plan:
    done = [e for e in entries if not e.skipped]
    return Plan(
        workflow_id=workflow_id,
        status=status,
        entries=entries,
        create=sum(e.action == "create" for e in done),
        update=sum(e.action == "update" for e in done),
        delete=sum(e.action == "delete" for e in done),
        irreversible=sum(not e.reversible for e in done),
        skipped=len(entries) - len(done),
        unchanged=rest.pop("unchanged", 0),
        **rest,
    )


def inventory_index(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Any]:
    """Inventory rows by (provider instance, kind, name)."""
    return {(r["provider"], r["kind"], r["name"]): r for r in rows}


def workflow_plan(
    workflow: Mapping[str, Any],
    tasks: Iterable[Mapping[str, Any]],
    inventory: Mapping[tuple[str, str, str], Mapping[str, Any]],
    catalog: Catalog,
) -> Plan:
    """The plan of a check-mode workflow, from its tasks' recorded checks."""
    entries: list[PlanEntry] = []
    errors: list[PlanError] = []
    unchanged = 0
    for task in tasks:
        if task["status"] in ("Failed", "Cancelled"):
            errors.append(PlanError(task["name"], task["error"] or task["status"]))
            continue
        if task["status"] != "Completed":
            continue
        result = task["result"] or {}
        declared = catalog.by_action(task["provider"], task["action"])
        reversible = result.get("reversible") is not False and (
            declared is None or declared.operation.undo is not None
        )
        changes = list(result.get("resources") or [])
        if not changes and declared is not None and "change" not in result:
            # A check that reported no change of its own, nor that there is none: what
            # the operation declares (a host's mount, a container's start).
            derived = planned_change(declared.kind, declared.operation, task["params"] or {})
            changes = [] if derived is None else [dataclasses.asdict(derived)]
        found = [
            entry
            for change in changes
            if (entry := _entry(task, change, inventory, catalog, reversible)) is not None
        ]
        unchanged += not found
        entries += found
    return counted(workflow["id"], workflow["status"], entries, unchanged=unchanged, errors=errors)


def _entry(
    task: Mapping[str, Any],
    change: Mapping[str, Any],
    inventory: Mapping[tuple[str, str, str], Mapping[str, Any]],
    catalog: Catalog,
    reversible: bool,
) -> PlanEntry | None:
    provider, kind, name = task["provider"], change["kind"], change["name"]
    row = inventory.get((provider, kind, name))
    live = row is not None and row.get("status") != "deleted"
    planned: dict[str, Any] = dict(change.get("data") or {})
    asked = {k for k in task["params"] or {} if k not in ("name", "simulate")}
    action: Action = change["op"]
    diff: dict[str, FieldChange] = {}
    if action == "delete":
        if not live:
            return None
    elif live:
        assert row is not None
        current = row.get("data") or {}
        diff = {
            key: FieldChange(current.get(key), value)
            for key, value in planned.items()
            if key not in _BOOKKEEPING and current.get(key) != value
        }
        if not diff and (action == "create" or planned):
            return None
        action = "update"
    fields = {k: v for k, v in planned.items() if k in asked} if action == "create" else {}
    note = None if reversible else "its operation has no undo"
    if action == "update" and not diff and reversible:
        note = task["action"]  # a change the inventory's values do not show (a start)
    return PlanEntry(
        action=action,
        provider=provider,
        kind=kind,
        name=name,
        resource=_policy_name(catalog, provider, kind, name),
        resource_id=row["id"] if live and row is not None else None,
        task=task["name"],
        fields=fields,
        changes=diff,
        reversible=reversible,
        note=note,
    )


def _policy_name(catalog: Catalog, provider: str, kind: str, name: str) -> str | None:
    found = next((k for k in catalog.kinds(provider) if k.name == kind), None)
    return None if found is None else f"{found.plural}:{name}"
