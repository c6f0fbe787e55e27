"""How a plan reads (`orchestrator.plan`): a line per entry and the summary."""

from __future__ import annotations

import msgspec

from orchestrator.plan import FieldChange, PlanEntry, PlanError, counted, line, workflow_plan
from orchestrator.resources import Declared
from providers.kinds import Kind, Operation


def _entry(action: str, name: str, **extra: object) -> PlanEntry:
    return PlanEntry(
        action=action,  # type: ignore[arg-type]
        provider="upcloud",
        kind="server",
        name=name,
        task=f"server {name}",
        **extra,  # type: ignore[arg-type]
    )


def test_each_action_has_its_mark_and_its_detail() -> None:
    created = _entry("create", "web-3", fields={"plan": "1xCPU-1 GB", "zone": "de-fra1"})
    assert line(created) == "+ create server web-3 (plan=1xCPU-1 GB, zone=de-fra1)"
    changed = _entry("update", "web-2", changes={"plan": FieldChange("small", "medium")})
    assert line(changed) == "~ update server web-2: plan small -> medium"
    assert line(_entry("delete", "web-1")) == "- delete server web-1"
    gone = _entry("delete", "disk", reversible=False, note="its operation has no undo")
    assert line(gone) == "! delete server disk [irreversible: its operation has no undo]"
    stuck = _entry("delete", "old", skipped=True, note="made by an undo")
    assert line(stuck) == "! delete server old [cannot be done: made by an undo]"


def test_the_summary_counts_what_would_be_done() -> None:
    entries = [
        _entry("create", "a"),
        _entry("create", "b"),
        _entry("update", "c"),
        _entry("delete", "d", reversible=False),
        _entry("delete", "e", skipped=True),
    ]
    plan = counted("w", "Completed", entries)
    assert plan.summary() == (
        "Plan: 2 to create, 1 to change, 1 to destroy (1 irreversible); 1 cannot be deleted"
    )
    failed = counted("w", "Failed", [], errors=[PlanError("server x", "boom")])
    assert failed.summary().endswith("; 1 failed to plan")
    assert counted("w", "Completed", []).summary().startswith("No changes")


class _Named(msgspec.Struct):
    device: str


_STORAGE = Kind(
    "storage",
    "storage",
    (Operation("format", _Named), Operation("mount", _Named, undo="unmount")),
    key="device",
)


class _Catalog:
    """What the plan asks of the catalog: an action's declaration, an instance's kinds."""

    def by_action(self, instance: str, action: str) -> Declared | None:
        name = action.partition(".")[2]
        operation = _STORAGE.operation(name)
        return None if operation is None else Declared(instance, "host", _STORAGE, operation)

    def kinds(self, instance: str) -> list[Kind]:
        return [_STORAGE]


def _task(action: str, result: dict[str, object]) -> dict[str, object]:
    return {
        "name": action,
        "status": "Completed",
        "provider": "host",
        "action": action,
        "params": {"device": "/dev/sdb"},
        "result": result,
        "error": None,
    }


def test_a_check_that_reports_no_change_of_its_own_is_taken_as_declared() -> None:
    tasks = [
        # A format's check says only that it is irreversible.
        _task("storage.format", {"reversible": False, "resources": []}),
        # One that found nothing to do says so.
        _task("storage.mount", {"change": None, "reversible": True, "resources": []}),
    ]
    workflow = {"id": "w", "status": "Completed"}
    plan = workflow_plan(workflow, tasks, {}, _Catalog())  # type: ignore[arg-type]
    (entry,) = plan.entries
    assert line(entry) == ("! update storage /dev/sdb [irreversible: its operation has no undo]")
    assert (plan.update, plan.irreversible, plan.unchanged) == (1, 1, 1)
