"""The `containers` provider type against a real podman service (tests/containers/engine.py),
without the orchestrator: containers, pulls with registry credentials, replicas that are
healthy before their task completes, undo, and a clear error with no engine."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from providers.base import ActionCall, ActionResult, InvalidParams, PermanentProviderError
from providers.containers import ContainersProvider, EngineRefused, EngineUnavailable
from tests.containers.engine import PASSWORD, USERNAME, Engine
from tests.unit.test_provider_sim import MemoryInventory

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent, pytest.mark.timeout(600)]


def call(action: str, inventory: MemoryInventory, task_id: str = "t1", **params: Any) -> ActionCall:
    return ActionCall(
        task_id=task_id,
        workflow_id="w1",
        instance="engine",
        action=action,
        params=params,
        attempt=1,
        timeout=None,
        workspace=Path("/nonexistent"),
        inventory=inventory,
    )


@pytest.fixture
def provider(engine: Engine) -> ContainersProvider:
    return ContainersProvider("engine", {"socket": str(engine.socket), "stop_timeout": 1})


async def applied(
    provider: ContainersProvider, inventory: MemoryInventory, c: ActionCall
) -> ActionResult:
    result = await provider.apply(c)
    inventory.record(result)
    return result


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return str(response.read().decode()).strip()


async def test_a_pull_needs_the_registry_credentials_and_never_keeps_them(
    engine: Engine, provider: ContainersProvider
) -> None:
    with pytest.raises(EngineRefused, match="cannot be had"):
        await provider.pull(engine.image, None)
    with pytest.raises(EngineRefused, match="cannot be had"):
        await provider.pull(engine.image, {"username": USERNAME, "password": "wrong"})
    assert await provider.pull(engine.image, {"username": USERNAME, "password": PASSWORD})


async def test_a_replica_is_healthy_when_its_task_completes_and_is_undone_by_delete(
    engine: Engine, provider: ContainersProvider
) -> None:
    await provider.pull(engine.image, {"username": USERNAME, "password": PASSWORD})
    inventory = MemoryInventory()
    params = {
        "name": "hello-r1",
        "deployment": "d1",
        "image": engine.image,
        "port": 8080,
        "env_vars": {"GREETING": "hi there"},
        "health_check": {"path": "/", "period_seconds": 1, "timeout_seconds": 1},
    }
    result = await applied(provider, inventory, call("replica.create", inventory, **params))
    port = result.result["host_port"]
    assert port and fetch(port) == "hi there"
    # A retry of the same task adopts its container; another task's name clash is refused.
    again = await provider.apply(call("replica.create", inventory, **params))
    assert again.result["container_id"] == result.result["container_id"]
    with pytest.raises(EngineRefused, match="already exists"):
        await provider.apply(call("replica.create", inventory, task_id="t2", **params))
    listed = await provider.apply(call("replica.list", inventory, deployment="d1"))
    assert [(r["name"], r["healthy"]) for r in listed.result["replicas"]] == [("hello-r1", True)]
    undone = await provider.compensate(call("replica.create", inventory, **params), result)
    inventory.record(undone)
    assert "hello-r1" not in engine.containers()
    assert inventory.rows == {}


async def test_a_replica_that_never_answers_fails_and_leaves_no_container(
    engine: Engine, provider: ContainersProvider
) -> None:
    await provider.pull(engine.broken, {"username": USERNAME, "password": PASSWORD})
    inventory = MemoryInventory()
    params = {
        "name": "broken-r1",
        "deployment": "d2",
        "image": engine.broken,
        "port": 8080,
        "health_check": {"period_seconds": 1, "timeout_seconds": 1, "failure_threshold": 2},
    }
    with pytest.raises(PermanentProviderError, match="health check"):
        await provider.apply(call("replica.create", inventory, **params))
    assert "broken-r1" not in engine.containers()


def test_bad_params_are_refused_naming_the_field(provider: ContainersProvider) -> None:
    base = {"id": "d1", "app_name": "app", "image": "x:1", "port": 80, "replicas": 1}
    for field, value in [
        ("replicas", -1),
        ("replicas", 21),
        ("port", 0),
        ("port", 70000),
        ("env_vars", {"A=B": "x"}),
        ("env_vars", {"A\x00": "x"}),
        ("app_name", "Bad Name"),
    ]:
        with pytest.raises(InvalidParams) as caught:
            provider.validate("deployment", "create", {**base, field: value})
        assert caught.value.path.startswith(field), (field, value, caught.value)


async def test_no_engine_is_a_clear_error(tmp_path: Path) -> None:
    provider = ContainersProvider("engine", {"socket": str(tmp_path / "none.sock")})
    with pytest.raises(EngineUnavailable, match="no container engine"):
        await provider.apply(call("container.list", MemoryInventory()))
