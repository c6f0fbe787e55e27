"""The simulated cloud: deterministic, idempotent against the inventory, and faulty on demand."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    PermanentProviderError,
    Provider,
    ProviderConfigError,
    ProviderError,
)
from providers.sim import SimProvider

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


class MemoryInventory:
    """What the store would record: resource data by (kind, name)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], JSON] = {}

    async def get(self, kind: str, name: str) -> JSON | None:
        return self.rows.get((kind, name))

    async def list(self, kind: str) -> list[JSON]:
        return [data for (k, _), data in self.rows.items() if k == kind]

    def record(self, result: ActionResult) -> None:
        for change in result.resources:
            if change.op == "delete":
                self.rows.pop((change.kind, change.name), None)
            else:
                self.rows[(change.kind, change.name)] = dict(change.data)


def make_call(
    action: str,
    inventory: MemoryInventory | None = None,
    task_id: str = "t1",
    attempt: int = 1,
    **params: Any,
) -> ActionCall:
    return ActionCall(
        task_id=task_id,
        workflow_id="w1",
        instance="upcloud",
        action=action,
        params=params,
        attempt=attempt,
        timeout=None,
        workspace=Path("/nonexistent"),
        inventory=inventory if inventory is not None else MemoryInventory(),
    )


def fast(**config: Any) -> SimProvider:
    return SimProvider("upcloud", {"latency": 0, **config})


WEB: dict[str, Any] = {"name": "web-01", "plan": "1xCPU-2 GB", "zone": "de-fra1"}


async def failures(provider: SimProvider, calls: int) -> list[bool]:
    outcome = []
    for i in range(calls):
        try:
            await provider.apply(make_call("noop", task_id=f"task-{i}"))
        except ProviderError:
            outcome.append(True)
        else:
            outcome.append(False)
    return outcome


def test_it_is_a_provider() -> None:
    assert isinstance(SimProvider("sim", {}), Provider)
    assert SimProvider.type_name == "sim"


@pytest.mark.parametrize(
    "config",
    [
        {"latency": -1},
        {"latency": "fast"},
        {"failure_rate": 1.5},
        {"seed": "x"},
        {"plans": []},
        {"zones": "de-fra1"},
        {"lateny": 1},
    ],
)
def test_invalid_config_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ProviderConfigError):
        SimProvider("sim", config)


async def test_noop_does_nothing_at_once() -> None:
    started = time.monotonic()
    result = await SimProvider("sim", {"latency": 10}).apply(make_call("noop"))
    assert time.monotonic() - started < 1
    assert result.resources == ()


async def test_each_call_sleeps_between_half_and_one_and_a_half_the_latency() -> None:
    provider = SimProvider("sim", {"latency": 0.1})
    for task in ("a", "b", "c"):
        started = time.monotonic()
        await provider.apply(make_call("server.create", task_id=task, **WEB))
        assert 0.049 <= time.monotonic() - started < 0.5


async def test_server_create_reports_a_deterministic_server() -> None:
    result = await fast().apply(make_call("server.create", **WEB, labels={"role": "web"}))
    (change,) = result.resources
    assert (change.kind, change.name, change.op) == ("server", "web-01", "create")
    assert change.data["plan"] == "1xCPU-2 GB"
    assert change.data["zone"] == "de-fra1"
    assert change.data["labels"] == {"role": "web"}
    assert change.data["ip"].startswith("198.51.100.")
    assert result.result == change.data
    assert result.output == "created server web-01 (1xCPU-2 GB, de-fra1)"
    again = await fast().apply(make_call("server.create", task_id="other", **WEB))
    assert again.resources[0].data["id"] == change.data["id"]
    assert again.resources[0].data["ip"] == change.data["ip"]


@pytest.mark.parametrize(
    ("params", "listed"),
    [({**WEB, "plan": "huge"}, "1xCPU-1 GB"), ({**WEB, "zone": "mars-1"}, "de-fra1")],
)
async def test_unknown_plans_and_zones_are_refused_listing_valid_ones(
    params: dict[str, Any], listed: str
) -> None:
    with pytest.raises(PermanentProviderError, match=listed):
        await fast().apply(make_call("server.create", **params))


async def test_configured_plans_replace_the_defaults() -> None:
    provider = fast(plans=["tiny"], zones=["lab"])
    await provider.apply(make_call("server.create", name="s", plan="tiny", zone="lab"))
    with pytest.raises(PermanentProviderError, match="valid: tiny"):
        await provider.apply(make_call("server.create", **WEB))


async def test_creating_what_exists_with_the_same_plan_and_zone_changes_nothing() -> None:
    inventory, provider = MemoryInventory(), fast()
    first = await provider.apply(make_call("server.create", inventory, **WEB))
    inventory.record(first)
    second = await provider.apply(make_call("server.create", inventory, **WEB))
    assert second.resources == ()
    assert "already exists" in second.output
    assert second.result["ip"] == first.result["ip"]
    with pytest.raises(PermanentProviderError, match="already exists"):
        await provider.apply(make_call("server.create", inventory, **{**WEB, "zone": "fi-hel1"}))


async def test_another_plan_in_the_same_zone_resizes_and_its_undo_restores() -> None:
    inventory, provider = MemoryInventory(), fast()
    inventory.record(await provider.apply(make_call("server.create", inventory, **WEB)))
    bigger = make_call("server.create", inventory, **{**WEB, "plan": "4xCPU-8 GB"})
    planned = await provider.check(bigger)
    assert planned.output == "would update server web-01 (4xCPU-8 GB, de-fra1)"
    assert [(c.op, c.data["plan"]) for c in planned.resources] == [("update", "4xCPU-8 GB")]
    assert inventory.rows[("server", "web-01")]["plan"] == "1xCPU-2 GB"
    resized = await provider.apply(bigger)
    assert resized.output.startswith("updated server web-01")
    inventory.record(resized)
    assert inventory.rows[("server", "web-01")]["plan"] == "4xCPU-8 GB"
    undone = await provider.compensate(bigger, resized)
    inventory.record(undone)
    assert inventory.rows[("server", "web-01")]["plan"] == "1xCPU-2 GB"


async def test_inventory_rows_with_a_status_are_understood() -> None:
    inventory = MemoryInventory()
    for row in ({**WEB, "status": "active"}, {"status": "active", "data": dict(WEB)}):
        inventory.rows[("server", "web-01")] = row
        result = await fast().apply(make_call("server.create", inventory, **WEB))
        assert result.resources == ()
        assert "status" not in result.result
    inventory.rows[("server", "web-01")] = {"status": "deleted", "data": dict(WEB)}
    result = await fast().apply(make_call("server.create", inventory, **WEB))
    assert len(result.resources) == 1


async def test_delete_removes_what_exists_and_ignores_what_does_not() -> None:
    inventory, provider = MemoryInventory(), fast()
    inventory.record(await provider.apply(make_call("server.create", inventory, **WEB)))
    deleted = await provider.apply(make_call("server.delete", inventory, name="web-01"))
    (change,) = deleted.resources
    assert (change.kind, change.name, change.op) == ("server", "web-01", "delete")
    inventory.record(deleted)
    again = await provider.apply(make_call("server.delete", inventory, name="web-01"))
    assert again.resources == ()
    assert "does not exist" in again.output


async def test_taskservs_need_their_server_and_clusters_their_type() -> None:
    inventory, provider = MemoryInventory(), fast()
    with pytest.raises(PermanentProviderError, match="server web-01 not found"):
        await provider.apply(make_call("taskserv.create", inventory, name="k8s", server="web-01"))
    inventory.record(await provider.apply(make_call("server.create", inventory, **WEB)))
    made = await provider.apply(
        make_call("taskserv.create", inventory, name="k8s", server="web-01")
    )
    assert made.output == "created taskserv k8s on server web-01"
    cluster = await provider.apply(
        make_call("cluster.create", inventory, name="c1", cluster_type="kubernetes")
    )
    assert cluster.resources[0].data["cluster_type"] == "kubernetes"
    with pytest.raises(PermanentProviderError, match="cluster_type"):
        await provider.apply(make_call("cluster.create", inventory, name="c2"))


async def test_a_taskserv_is_a_resource_per_server() -> None:
    inventory, provider = MemoryInventory(), fast()
    for server in ("web-01", "web-02"):
        inventory.record(
            await provider.apply(make_call("server.create", inventory, **{**WEB, "name": server}))
        )
    names = []
    for server in ("web-01", "web-02"):
        call = make_call("taskserv.create", inventory, name="k8s", server=server)
        made = await provider.apply(call)
        inventory.record(made)
        names.append(made.resources[0].name)
    assert names == ["k8s@web-01", "k8s@web-02"]
    again = await provider.apply(
        make_call("taskserv.create", inventory, name="k8s", server="web-02")
    )
    assert again.resources == ()


async def test_unsupported_actions_are_permanent_errors_listing_the_supported() -> None:
    with pytest.raises(PermanentProviderError, match=r"server\.create"):
        await fast().apply(make_call("server.resize", name="web-01"))


async def test_the_same_seed_fails_the_same_calls() -> None:
    first = await failures(fast(seed=7, failure_rate=0.5), 200)
    second = await failures(fast(seed=7, failure_rate=0.5), 200)
    other = await failures(fast(seed=8, failure_rate=0.5), 200)
    assert first == second
    assert first != other


async def test_the_failure_rate_is_roughly_honoured() -> None:
    outcome = await failures(fast(seed=1, failure_rate=0.3), 2000)
    assert 0.2 < sum(outcome) / len(outcome) < 0.4  # 600 expected; sd is about 20
    assert not any(await failures(fast(seed=1), 200))


async def test_retries_see_fresh_randomness() -> None:
    provider = fast(failure_rate=0.5)
    outcomes = set()
    for attempt in range(1, 40):
        try:
            await provider.apply(make_call("noop", attempt=attempt))
            outcomes.add("ok")
        except ProviderError:
            outcomes.add("failed")
    assert outcomes == {"ok", "failed"}


async def test_fail_attempts_fails_the_first_attempts_then_succeeds() -> None:
    provider = fast()
    for attempt in (1, 2):
        with pytest.raises(ProviderError, match="simulated failure") as caught:
            await provider.apply(make_call("noop", attempt=attempt, simulate={"fail_attempts": 2}))
        assert not isinstance(caught.value, PermanentProviderError)
    await provider.apply(make_call("noop", attempt=3, simulate={"fail_attempts": 2}))


@pytest.mark.parametrize("fail", [True, "always"])
async def test_fail_fails_every_attempt(fail: bool | str) -> None:
    for attempt in (1, 5):
        with pytest.raises(ProviderError, match="simulated failure"):
            await fast().apply(
                make_call("server.create", attempt=attempt, simulate={"fail": fail}, **WEB)
            )


async def test_permanent_failures_can_be_simulated() -> None:
    with pytest.raises(PermanentProviderError, match="simulated failure"):
        await fast().apply(make_call("noop", simulate={"fail": "permanent"}))


async def test_malformed_simulate_params_are_refused() -> None:
    with pytest.raises(PermanentProviderError, match="simulate"):
        await fast().apply(make_call("noop", simulate={"fail_attempt": 2}))


async def test_compensate_deletes_what_apply_created() -> None:
    inventory, provider = MemoryInventory(), fast()
    call = make_call("server.create", inventory, **WEB)
    applied = await provider.apply(call)
    inventory.record(applied)
    undone = await provider.compensate(call, applied)
    (change,) = undone.resources
    assert (change.kind, change.name, change.op) == ("server", "web-01", "delete")
    inventory.record(undone)
    assert inventory.rows == {}


async def test_compensating_an_unchanged_create_does_nothing() -> None:
    undone = await fast().compensate(make_call("server.create", **WEB), ActionResult())
    assert undone.resources == ()


async def test_compensate_fails_when_asked_to() -> None:
    provider = fast()
    call = make_call("server.create", simulate={"fail_compensate": True}, **WEB)
    applied = await provider.apply(call)
    with pytest.raises(ProviderError, match="simulated failure"):
        await provider.compensate(call, applied)


async def test_check_says_what_would_change_and_changes_nothing() -> None:
    inventory, provider = MemoryInventory(), SimProvider("sim", {"latency": 10})
    started = time.monotonic()
    planned = await provider.check(make_call("server.create", inventory, **WEB))
    assert planned.output == "would create server web-01 (1xCPU-2 GB, de-fra1)"
    # The planned change, for check mode's plan (which never writes it).
    (change,) = planned.resources
    assert (change.op, change.name, change.data["plan"]) == ("create", "web-01", "1xCPU-2 GB")
    assert inventory.rows == {}
    assert time.monotonic() - started < 1
    gone = await provider.check(make_call("server.delete", inventory, name="web-01"))
    assert "does not exist" in gone.output
    with pytest.raises(PermanentProviderError):
        await provider.check(make_call("server.create", inventory, **{**WEB, "plan": "huge"}))
    planned = await provider.check(
        make_call("taskserv.create", inventory, name="k8s", server="web-01")
    )
    assert planned.output == "would create taskserv k8s on server web-01"


async def test_a_timeout_cancels_the_simulated_wait_promptly() -> None:
    provider = SimProvider("sim", {"latency": 30})
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.apply(make_call("server.create", **WEB)), 0.05)
    assert time.monotonic() - started < 1


async def test_cancel_by_task_id_ends_the_wait_with_an_error() -> None:
    provider = SimProvider("sim", {"latency": 30})
    task = asyncio.create_task(provider.apply(make_call("server.create", task_id="t7", **WEB)))
    await asyncio.sleep(0.01)
    await provider.cancel("t7")
    with pytest.raises(ProviderError, match="cancelled"):
        await asyncio.wait_for(task, 1)
    await provider.cancel("t7")  # nothing pending: a no-op


async def test_reap_is_a_no_op() -> None:
    await fast().reap({"pid": 1})
