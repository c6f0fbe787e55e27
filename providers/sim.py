"""A simulated cloud, shipped for demos, tests and dry runs.

It keeps no state of its own: what exists is what the orchestrator's inventory says,
so a simulated server lives exactly as long as its inventory row. Every call of the
same (seed, instance, task, attempt) sleeps and fails the same way, so a run can be
replayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    PermanentProviderError,
    ProviderConfigError,
    ProviderError,
    ResourceChange,
)

DEFAULT_PLANS = (
    "1xCPU-1 GB",
    "1xCPU-2 GB",
    "2xCPU-4 GB",
    "4xCPU-8 GB",
    "8xCPU-32 GB",
    "t3.micro",
    "t3.small",
    "t3.medium",
    "m5.large",
)
DEFAULT_ZONES = (
    "de-fra1",
    "fi-hel1",
    "nl-ams1",
    "uk-lon1",
    "us-nyc1",
    "us-east-1",
    "eu-west-1",
    "eu-central-1",
)
#: The parameters that identify what was asked: a create with the same ones is a no-op.
_IDENTITY = {"server": ("plan", "zone"), "taskserv": ("server",), "cluster": ("cluster_type",)}
ACTIONS = ("noop", *(f"{kind}.{op}" for kind in _IDENTITY for op in ("create", "delete")))
_CONFIG_KEYS = frozenset({"latency", "failure_rate", "seed", "plans", "zones"})
_NOT_DATA = frozenset({"name", "simulate"})


@dataclass(frozen=True, slots=True)
class _Simulate:
    """The per-call `simulate` parameter."""

    fail: bool | Literal["always", "permanent"] = False
    fail_attempts: int = 0
    latency: float | None = None
    fail_compensate: bool = False


@dataclass(frozen=True, slots=True)
class _Plan:
    """What an action does to the inventory; `change` is None when nothing changes."""

    summary: str
    change: ResourceChange | None = None
    result: JSON = field(default_factory=dict)


class SimProvider:
    """A fake cloud with servers, task services and clusters.

    Config (all optional): `latency` (seconds, default 0.05; each call sleeps a uniform
    0.5-1.5 x latency), `failure_rate` (0..1, chance that an attempt fails, retryably),
    `seed` (int), `plans` and `zones` (the accepted values).

    Params: `name` for every action but `noop`; `plan` and `zone` for `server.create`,
    optional `server` for `taskserv.create`, `cluster_type` for `cluster.create`; other
    params are stored in the resource's data. `simulate` injects failures: `fail`
    (true or "always": every attempt fails; "permanent": fails without retry),
    `fail_attempts` (attempts 1..N fail, later ones succeed; attempts count from 1),
    `latency` (exact seconds, overrides the config) and `fail_compensate`.
    """

    type_name: ClassVar[str] = "sim"

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            raise ProviderConfigError(f"unknown settings {unknown}")
        self.name = name
        self.latency = _number(config, "latency", 0.05)
        self.failure_rate = _number(config, "failure_rate", 0.0)
        if self.failure_rate > 1:
            raise ProviderConfigError("failure_rate must be in 0..1")
        seed = config.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ProviderConfigError("seed must be an integer")
        self.seed = seed
        self.plans = _names(config, "plans", DEFAULT_PLANS)
        self.zones = _names(config, "zones", DEFAULT_ZONES)
        self._sleeping: dict[str, asyncio.Future[None]] = {}

    async def apply(self, call: ActionCall) -> ActionResult:
        """Sleep, maybe fail as configured, then report the resource created or deleted.

        Creating what already exists with the same identity changes nothing; with a
        different one it is a conflict. Deleting what does not exist changes nothing.
        """
        simulate = _parse_simulate(call.params)
        rng = random.Random(f"{self.seed}\x00{self.name}\x00{call.task_id}\x00{call.attempt}")
        jitter, roll = rng.uniform(0.5, 1.5), rng.random()
        if call.action == "noop":
            plan, delay = _Plan("noop"), simulate.latency or 0.0
        else:
            plan = await self._plan(call, strict=True)
            delay = simulate.latency if simulate.latency is not None else self.latency * jitter
        await self._sleep(call.task_id, delay)
        if simulate.fail == "permanent":
            raise PermanentProviderError("simulated failure: simulate.fail is 'permanent'")
        if simulate.fail:
            raise ProviderError("simulated failure: simulate.fail is set")
        if call.attempt <= simulate.fail_attempts:
            raise ProviderError(
                f"simulated failure: attempt {call.attempt} of {simulate.fail_attempts} set to fail"
            )
        if roll < self.failure_rate:
            raise ProviderError(f"simulated failure: failure_rate is {self.failure_rate}")
        if plan.change is None:
            return ActionResult(output=plan.summary, result=plan.result)
        return ActionResult(
            output=f"{plan.change.op}d {plan.summary}",
            result=plan.result,
            resources=(plan.change,),
        )

    async def compensate(self, call: ActionCall, applied: ActionResult) -> ActionResult:
        """Delete what `applied` created and recreate what it deleted, newest first."""
        simulate = _parse_simulate(call.params)
        undo = tuple(
            ResourceChange(r.kind, r.name, "delete" if r.op == "create" else "create", data=r.data)
            for r in reversed(applied.resources)
            if r.op in ("create", "delete")
        )
        if undo or simulate.fail_compensate:
            delay = simulate.latency if simulate.latency is not None else self.latency
            await self._sleep(call.task_id, delay)
        if simulate.fail_compensate:
            raise ProviderError("simulated failure: simulate.fail_compensate is set")
        if not undo:
            return ActionResult(output="nothing to undo")
        output = "\n".join(f"{r.op}d {r.kind} {r.name}" for r in undo)
        return ActionResult(output=output, resources=undo)

    async def check(self, call: ActionCall) -> ActionResult:
        """Say what `apply` would change, without latency, failures or resources."""
        _parse_simulate(call.params)
        if call.action == "noop":
            return ActionResult(output="would do nothing")
        plan = await self._plan(call, strict=False)
        if plan.change is None:
            return ActionResult(output=plan.summary, result={"change": None})
        return ActionResult(
            output=f"would {plan.change.op} {plan.summary}", result={"change": plan.change.op}
        )

    async def cancel(self, task_id: str) -> None:
        """End the task's pending simulated wait: its `apply` raises `ProviderError`."""
        pending = self._sleeping.get(task_id)
        if pending is not None and not pending.done():
            pending.set_exception(ProviderError("cancelled"))

    async def reap(self, handle: JSON) -> None:
        """Nothing outlives an orchestrator here."""

    async def finished(self, call: ActionCall) -> ActionResult | None:
        """An interrupted attempt is retried: the simulated change is idempotent."""
        return None

    # -- internals ------------------------------------------------------------------

    async def _plan(self, call: ActionCall, *, strict: bool) -> _Plan:
        kind, _, op = call.action.partition(".")
        if call.action not in ACTIONS:
            raise PermanentProviderError(
                f"sim provider: unsupported action {call.action!r} (supported: {list(ACTIONS)})"
            )
        params = call.params
        name = _param_str(params, "name")
        # A taskserv is installed per server: its inventory row is `name@server`.
        key = f"{name}@{params['server']}" if kind == "taskserv" and params.get("server") else name
        existing = _live(await call.inventory.get(kind, key))
        if op == "delete":
            if existing is None:
                return _Plan(f"{kind} {key} does not exist")
            return _Plan(f"{kind} {key}", ResourceChange(kind, key, "delete", data=existing))
        identity = {attr: self._identity(attr, params) for attr in _IDENTITY[kind]}
        if existing is not None:
            if all(existing.get(k) == v for k, v in identity.items()):
                return _Plan(f"{kind} {key} already exists", result=existing)
            held = ", ".join(f"{k} {existing.get(k)!r}" for k in identity)
            raise PermanentProviderError(f"{kind} {name} already exists with {held}")
        server = identity.get("server")
        if (
            strict
            and server is not None
            and _live(await call.inventory.get("server", server)) is None
        ):
            raise PermanentProviderError(f"server {server} not found for taskserv {name}")
        data = {k: v for k, v in params.items() if k not in _NOT_DATA} | identity
        digest = hashlib.sha256(f"{self.name}/{kind}/{key}".encode()).digest()
        data["id"] = str(uuid.UUID(bytes=digest[:16], version=4))
        if kind == "server":
            data["ip"] = f"198.51.100.{1 + digest[16] % 254}"
        if kind == "taskserv":
            summary = f"taskserv {name}" + (f" on server {server}" if server else "")
        else:
            summary = f"{kind} {name} ({_describe(data, _IDENTITY[kind])})"
        return _Plan(summary, ResourceChange(kind, key, "create", data=data), result=data)

    def _identity(self, key: str, params: JSON) -> Any:
        if key == "server":
            return None if params.get("server") is None else _param_str(params, "server")
        value = _param_str(params, key)
        allowed = {"plan": self.plans, "zone": self.zones}.get(key)
        if allowed is not None and value not in allowed:
            raise PermanentProviderError(f"unknown {key} {value!r}; valid: {', '.join(allowed)}")
        return value

    async def _sleep(self, task_id: str, delay: float) -> None:
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(delay, _wake, pending)
        self._sleeping[task_id] = pending
        try:
            await pending
        finally:
            timer.cancel()
            if self._sleeping.get(task_id) is pending:
                del self._sleeping[task_id]


def _wake(pending: asyncio.Future[None]) -> None:
    if not pending.done():
        pending.set_result(None)


def _live(row: JSON | None) -> JSON | None:
    """The attributes of an inventory entry: a row holding `data`, or the data itself
    (with its `status` beside it); None when there is none or it is marked deleted."""
    if row is None or row.get("status") == "deleted":
        return None
    data = row.get("data")
    if isinstance(data, Mapping):
        return dict(data)
    return {k: v for k, v in row.items() if k != "status"}


def _describe(data: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    return ", ".join(str(data.get(k)) for k in keys)


def _param_str(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise PermanentProviderError(f"parameter {key!r} must be a non-empty string")
    return value


def _parse_simulate(params: Mapping[str, Any]) -> _Simulate:
    raw = params.get("simulate", {})
    if not isinstance(raw, Mapping):
        raise PermanentProviderError("`simulate` must be a table")
    unknown = sorted(set(raw) - set(_Simulate.__dataclass_fields__))
    fail, attempts = raw.get("fail", False), raw.get("fail_attempts", 0)
    latency, fail_compensate = raw.get("latency"), raw.get("fail_compensate", False)
    if (
        unknown
        or fail not in (True, False, "always", "permanent")
        or not isinstance(attempts, int)
        or (latency is not None and not isinstance(latency, int | float))
        or not isinstance(fail_compensate, bool)
    ):
        raise PermanentProviderError(
            "`simulate` takes fail (bool, 'always' or 'permanent'), fail_attempts (int), "
            "latency (seconds) and fail_compensate (bool)"
        )
    return _Simulate(fail, attempts, None if latency is None else float(latency), fail_compensate)


def _number(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ProviderConfigError(f"{key} must be a number >= 0")
    return float(value)


def _names(config: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = config.get(key, default)
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(v, str) for v in value)
    ):
        raise ProviderConfigError(f"{key} must be a list of names")
    return tuple(value)
