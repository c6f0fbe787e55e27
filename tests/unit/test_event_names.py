"""Webhook names (`orchestrator/event_names.py`): every log event that webhooks carry has
a name a subscription can list, and a checkpoint's end is one of them."""

from __future__ import annotations

import pytest

from orchestrator.event_names import EVENT_NAMES, webhook_event

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize(
    ("kind", "data", "name"),
    [
        ("CheckpointCreated", {}, "checkpoint.created"),
        ("CheckpointDeleted", {}, "checkpoint.deleted"),
        ("StateRestored", {}, "state.restored"),
        ("TaskStatusChanged", {"status": "Completed"}, "task.completed"),
        ("TaskStatusChanged", {"status": "Failed", "retrying": True}, "task.retrying"),
        ("ResourceChanged", {"op": "create"}, "resource.created"),
        ("ResourceChanged", {"op": "update"}, "resource.updated"),
        ("ResourceChanged", {"op": "delete"}, "resource.deleted"),
    ],
)
def test_events_have_webhook_names_a_subscription_can_list(kind, data, name):
    assert webhook_event(kind, data) == name
    assert name in EVENT_NAMES


def test_a_deployment_workflow_change_is_also_a_deployment_status_change():
    from orchestrator.deployment_events import deployment_status
    from orchestrator.event_names import webhook_events

    data = {"kind": "deployment", "status": "Completed", "workflow_id": "w"}
    assert webhook_events("WorkflowStatusChanged", data) == [
        "workflow.completed",
        "deployment_status_changed",
    ]
    assert "deployment_status_changed" in EVENT_NAMES
    other = {**data, "kind": "workflow"}
    assert webhook_events("WorkflowStatusChanged", other) == ["workflow.completed"]
    assert deployment_status("create", "Running") == "pending"
    assert deployment_status("create", "RolledBack") == "failed"
    assert deployment_status("update", "RolledBack") == "running"
    assert deployment_status("scale", "RollingBack") == "updating"
    assert deployment_status("stop", "Completed") == "stopped"
    assert deployment_status("delete", "Completed") == "deleted"
    assert deployment_status("domains", "Completed", "stopped") == "stopped"
    assert deployment_status("domains", "Running", "stopped") == "updating"
    # The health monitor's restart of a replica: down, then up; one that did not come
    # back leaves the deployment running (not failed).
    assert deployment_status("restart", "Pending") == "updating"
    assert deployment_status("restart", "Completed") == "running"
    assert deployment_status("restart", "Failed") == "running"
