"""The simulated cloud's provider: plans and zones, latency, failures, the inventory."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec

from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    BaseProvider,
    InvalidParams,
    Kind,
    PermanentProviderError,
    ProviderConfigError,
    ProviderError,
    ResourceChange,
    ResourceNotFound,
)
from providers.sim._kinds import IDENTITY, KINDS, Simulate

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
_CONFIG_KEYS = frozenset({"latency", "failure_rate", "seed", "plans", "zones"})
_NOT_DATA = frozenset({"name", "simulate"})
#: What undoes a create or a delete.
_UNDO: dict[str, Any] = {"create": "delete", "delete": "create"}


@dataclass(frozen=True, slots=True)
class _Plan:
    """What an action does to the inventory; `change` is None when nothing changes."""

    summary: str
    change: ResourceChange | None = None
    result: JSON = field(default_factory=dict)


class SimProvider(BaseProvider):
    """A fake cloud with servers, task services and clusters (declared in `_kinds`).

    Config (all optional): `latency` (seconds, default 0.05; each call sleeps a uniform
    0.5-1.5 x latency), `failure_rate` (0..1, chance that an attempt fails, retryably),
    `seed` (int), `plans` and `zones` (the accepted values, checked at submit by
    `validate`).

    Params: `name` for every action but `noop`; `plan` and `zone` for `server.create`,
    optional `server` for a taskserv, `cluster_type` for `cluster.create`; other params
    are stored in the resource's data. `simulate` injects failures (`_kinds.Simulate`).
    """

    type_name: ClassVar[str] = "sim"
    kinds: ClassVar[tuple[Kind, ...]] = KINDS

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
        simulate = _simulate(call.params)
        rng = random.Random(f"{self.seed}\x00{self.name}\x00{call.task_id}\x00{call.attempt}")
        jitter, roll = rng.uniform(0.5, 1.5), rng.random()
        if call.action == "noop":
            plan, delay = _Plan("noop"), simulate.latency or 0.0
        elif self.declared(call)[1].name == "read":
            return ActionResult(output="", result=await self._read(call))
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
        simulate = _simulate(call.params)
        previous = applied.result.get("previous")
        undo = tuple(
            ResourceChange(r.kind, r.name, _UNDO[r.op], data=r.data)
            if r.op != "update"
            # A resize is undone by the values it replaced.
            else ResourceChange(r.kind, r.name, "update", data=dict(previous or {}))
            for r in reversed(applied.resources)
            if r.op != "update" or isinstance(previous, Mapping)
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
        """Say what `apply` would change, without latency or failures: the planned
        change as `resources` (which check mode records but never writes)."""
        _simulate(call.params)
        if call.action == "noop":
            return ActionResult(output="would do nothing")
        plan = await self._plan(call, strict=False)
        if plan.change is None:
            return ActionResult(output=plan.summary, result={"change": None})
        return ActionResult(
            output=f"would {plan.change.op} {plan.summary}",
            result={"change": plan.change.op},
            resources=(plan.change,),
        )

    async def cancel(self, task_id: str) -> None:
        """End the task's pending simulated wait: its `apply` raises `ProviderError`."""
        pending = self._sleeping.get(task_id)
        if pending is not None and not pending.done():
            pending.set_exception(ProviderError("cancelled"))

    def validate(self, kind: str, operation: str, params: Mapping[str, Any]) -> msgspec.Struct:
        """The declared struct, and the plan and zone among this instance's."""
        struct = super().validate(kind, operation, params)
        for attr, allowed in (("plan", self.plans), ("zone", self.zones)):
            value = getattr(struct, attr, None)
            if value is not None and value not in allowed:
                raise InvalidParams(attr, f"unknown {attr} {value!r}; valid: {', '.join(allowed)}")
        return struct

    # -- internals ------------------------------------------------------------------

    def _checked(self, call: ActionCall) -> tuple[str, str, str]:
        """(kind, operation, inventory key) of a call whose params are valid."""
        kind, operation = self.declared(call)
        try:
            self.validate(kind.name, operation.name, call.params)
        except InvalidParams as exc:
            raise PermanentProviderError(str(exc)) from None
        # The declared item name: a taskserv's is `name@server` (`Kind.scope`).
        key = kind.item_name(call.params)
        if key is None:
            raise PermanentProviderError(f"{call.action}: the params name no {kind.name}")
        return kind.name, operation.name, key

    async def _read(self, call: ActionCall) -> JSON:
        kind, _, key = self._checked(call)
        existing = _live(await call.inventory.get(kind, key))
        if existing is None:
            raise ResourceNotFound(f"{kind} {key} does not exist")
        return existing

    async def _plan(self, call: ActionCall, *, strict: bool) -> _Plan:
        kind, op, key = self._checked(call)
        params = call.params
        name = params["name"]
        existing = _live(await call.inventory.get(kind, key))
        if op == "delete":
            if existing is None:
                return _Plan(f"{kind} {key} does not exist")
            return _Plan(f"{kind} {key}", ResourceChange(kind, key, "delete", data=existing))
        identity = {attr: params.get(attr) for attr in IDENTITY[kind]}
        if existing is not None:
            if all(existing.get(k) == v for k, v in identity.items()):
                return _Plan(f"{kind} {key} already exists", result=existing)
            if kind == "server" and existing.get("zone") == identity["zone"]:
                # Another plan in the same zone: resized in place, as clouds do.
                data = existing | {k: v for k, v in params.items() if k not in _NOT_DATA}
                change = ResourceChange(kind, key, "update", data=data)
                summary = f"{kind} {name} ({_describe(data, IDENTITY[kind])})"
                return _Plan(summary, change, result={"previous": existing})
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
            summary = f"{kind} {name} ({_describe(data, IDENTITY[kind])})"
        return _Plan(summary, ResourceChange(kind, key, "create", data=data), result=data)

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


def _simulate(params: Mapping[str, Any]) -> Simulate:
    try:
        return msgspec.convert(params.get("simulate") or {}, Simulate)
    except msgspec.ValidationError as exc:
        raise PermanentProviderError(
            f"`simulate` takes fail (bool, 'always' or 'permanent'), fail_attempts (int), "
            f"latency (seconds) and fail_compensate (bool): {exc}"
        ) from None


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
