"""The health monitor's counting (orchestrator/deployment_health.py): failures in a row
per replica, cleared by a pass or by a new incarnation of the replica (a restart), due
at the threshold; and the health check a deployment's record gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.deployment_health import HealthMonitor, Watch, health_of, incarnation
from orchestrator.service import Orchestrator
from orchestrator.settings import DeploymentSettings, Settings

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


def test_a_replica_is_due_after_threshold_failures_in_a_row() -> None:
    watch = Watch()
    assert not watch.observe("r1", "c1@t1", True, 3)
    assert not watch.observe("r1", "c1@t1", False, 3)
    assert not watch.observe("r1", "c1@t1", False, 3)
    assert watch.failing(3) == []
    assert watch.observe("r1", "c1@t1", False, 3)
    assert watch.failing(3) == ["r1"]
    assert watch.replicas["r1"].failures == 3 and not watch.replicas["r1"].healthy


def test_a_replica_not_yet_ready_is_starting_not_failing() -> None:
    watch = Watch()
    for _ in range(5):
        assert not watch.observe("r1", "c1@t1", False, 2)
    assert watch.replicas["r1"].failures == 0
    # Ready once (seen passing here, or recorded ready by its task): failures count.
    watch.observe("r1", "c1@t1", True, 2)
    assert not watch.observe("r1", "c1@t1", False, 2)
    assert watch.observe("r1", "c1@t1", False, 2)
    assert not watch.observe("r2", "c2@t1", False, 2, was_ready=True)
    assert watch.observe("r2", "c2@t1", False, 2)


def test_a_pass_clears_the_count() -> None:
    watch = Watch()
    for _ in range(2):
        watch.observe("r1", "c1@t1", False, 3, was_ready=True)
    watch.observe("r1", "c1@t1", True, 3)
    assert watch.replicas["r1"].failures == 0
    assert not watch.observe("r1", "c1@t1", False, 3)


def test_a_restarted_replica_counts_afresh() -> None:
    watch = Watch()
    for _ in range(3):
        watch.observe("r1", "c1@t1", False, 3, was_ready=True)
    assert watch.failing(3) == ["r1"]
    # The same container started again (by the monitor's workflow, or anyone): not
    # counted until that incarnation was ready.
    assert not watch.observe("r1", "c1@t2", False, 3)
    assert watch.replicas["r1"].failures == 0
    assert not watch.observe("r1", "c1@t2", False, 3, was_ready=True)
    assert watch.replicas["r1"].failures == 1


def test_replicas_are_counted_apart_and_gone_ones_forgotten() -> None:
    watch = Watch()
    for _ in range(2):
        watch.observe("r1", "c1@t1", False, 2, was_ready=True)
    watch.observe("r2", "c2@t1", False, 2, was_ready=True)
    for _ in range(3):
        watch.observe("r3", "c3@t1", False, 2, was_ready=True)
    assert watch.failing(2) == ["r3", "r1"]  # most failures first
    watch.keep_only({"r1", "r2"})
    assert set(watch.replicas) == {"r1", "r2"}
    assert watch.failing(2) == ["r1"]


@given(st.lists(st.booleans(), max_size=60), st.integers(min_value=1, max_value=10))
def test_due_exactly_when_the_last_threshold_checks_all_failed_after_a_pass(
    checks: list[bool], threshold: int
) -> None:
    watch = Watch()
    for index, healthy in enumerate(checks):
        due = watch.observe("r", "c@t", healthy, threshold)
        seen = checks[: index + 1]
        recent = seen[-threshold:]
        ready_before = True in seen[: len(seen) - threshold]
        assert due == (len(recent) == threshold and not any(recent) and ready_before)


def test_the_record_gives_the_health_check_or_the_defaults() -> None:
    check = health_of({"health_check": {"path": "/up", "period_seconds": 2}})
    assert (check.path, check.period_seconds, check.failure_threshold) == ("/up", 2, 3)
    assert health_of({}).period_seconds == 10
    assert health_of({"health_check": {"period_seconds": 0}}).period_seconds == 10
    assert incarnation({"container_id": "abc", "started_at": "T"}) == "abc@T"


@pytest.mark.parametrize(
    ("enabled", "providers", "watching"),
    [
        (True, {"engine": {"type": "containers", "socket": "/nonexistent.sock"}}, ["engine"]),
        (False, {"engine": {"type": "containers", "socket": "/nonexistent.sock"}}, None),
        (True, {"local": {"type": "local"}}, None),
    ],
)
def test_the_monitor_watches_the_instances_that_restart_replicas_unless_turned_off(
    tmp_path: Path, enabled: bool, providers: dict[str, dict[str, Any]], watching: list[str] | None
) -> None:
    settings = Settings(
        data_dir=str(tmp_path),
        providers=providers,
        deployments=DeploymentSettings(health_monitor=enabled),
    )
    monitor = HealthMonitor.of(Orchestrator(settings))
    assert (monitor.instances if monitor is not None else None) == watching
