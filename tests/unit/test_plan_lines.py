"""How a plan reads (`orchestrator.plan`): a line per entry and the summary."""

from __future__ import annotations

from orchestrator.plan import FieldChange, PlanEntry, PlanError, counted, line


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
