"""The deployments' health monitor: a replica that fails its health check
`failure_threshold` times in a row, after it was ready, is restarted by a workflow.

One asyncio task per orchestrator process (`Orchestrator.start`, when
`deployments.health_monitor` is on and an instance does `replica.restart`). For each
deployment recorded as `running` and changed by no workflow under way, it lists the
replicas and probes each (`replica.list`: GET `path` on the published loopback port
within `timeout_seconds`) once per `period_seconds` of the deployment's health check.
A pass clears a replica's count of failures; a failed check, or a container that is not
running, adds one, once that incarnation of the replica (its container and start time)
was ready: seen passing, or recorded by the task that made, started or restarted it
(which waited for it), so that a replica still starting is not failing. At
`failure_threshold` the replica is restarted by a workflow of one
task, `replica.restart` (the container restarted, healthy again before the task
completes, counted in the deployment's record), through the executor like every other
change: its status changes are `deployment_status_changed` events (`restart`:
`updating`, then `running`).

The decision is a claim in the database (the Idempotency-Key table), keyed by the
deployment and the incarnation of each of its replicas (container id and start time):
with several orchestrator processes on one PostgreSQL database, each watching every
deployment, the first to claim a given state of a deployment submits the restart and the
others skip it; once the replica restarted the key is new. A deployment with a workflow
under way is skipped (and its counts cleared: its replicas are being changed). A replica
whose restart did not bring it back (the task failed: `failure_threshold` periods
without a pass) is not restarted again: it was never ready since, and stays not ready
in `status` until a change of the deployment (update, scale, stop and start) replaces
or starts it.

`view(deployment)` is this process's latest look at each replica, which `GET
…/status` uses: a replica failing its checks is neither ready nor counted available
once it is to be restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from orchestrator import deployment_events
from orchestrator.store.idempotency import Answer, RequestKey
from orchestrator.store.workflows import list_resources, workflows_in
from providers.containers._kinds import HealthCheck

if TYPE_CHECKING:
    from orchestrator.service import Orchestrator

log = structlog.get_logger(__name__)

#: Seconds between two looks for deployments to watch (and their due checks), at most.
TICK = 1.0
#: The claims' scope in the Idempotency-Key table (the API's scopes are digests).
SCOPE = "deployment-health-monitor"


@dataclass(slots=True)
class ReplicaHealth:
    """What the monitor knows of one replica."""

    #: Its container and start time: a restart (by anyone) begins a new count.
    incarnation: str
    #: This incarnation was ready once (seen passing, or recorded by the task that
    #: waited for it): only then do failures count.
    was_ready: bool = False
    failures: int = 0
    #: The last check's outcome and time.
    healthy: bool = False
    checked_at: str | None = None


@dataclass(slots=True)
class Watch:
    """The failure counts of one deployment's replicas (no I/O: what a check means)."""

    replicas: dict[str, ReplicaHealth] = field(default_factory=dict)

    def observe(
        self,
        name: str,
        incarnation: str,
        healthy: bool,
        threshold: int,
        *,
        was_ready: bool = False,
        at: str | None = None,
    ) -> bool:
        """Record one check of `name`; True when it has now failed `threshold` checks in
        a row after it was ready (it is to be restarted). `was_ready`: the store says
        this incarnation was ready. A replica not yet ready is starting (a task waits
        for it), not failing."""
        known = self.replicas.get(name)
        if known is None or known.incarnation != incarnation:
            known = self.replicas[name] = ReplicaHealth(incarnation)
        known.was_ready = known.was_ready or was_ready or healthy
        known.healthy, known.checked_at = healthy, at
        known.failures = 0 if healthy or not known.was_ready else known.failures + 1
        return known.failures >= threshold

    def keep_only(self, names: set[str]) -> None:
        """Forget replicas that are gone."""
        for name in set(self.replicas) - names:
            del self.replicas[name]

    def failing(self, threshold: int) -> list[str]:
        """The replicas at `threshold` failures or more, most failures first."""
        due = [n for n, r in self.replicas.items() if r.failures >= threshold]
        return sorted(due, key=lambda n: -self.replicas[n].failures)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def incarnation(replica: Mapping[str, Any]) -> str:
    return f"{replica.get('container_id')}@{replica.get('started_at')}"


def health_of(record: Mapping[str, Any]) -> HealthCheck:
    raw = record.get("health_check")
    try:
        return msgspec.convert(raw, HealthCheck) if raw else HealthCheck()
    except msgspec.ValidationError:
        return HealthCheck()


class HealthMonitor:
    """See the module's docstring."""

    def __init__(self, orchestrator: Orchestrator, instances: list[str]) -> None:
        self.orchestrator = orchestrator
        self.instances = instances
        self.watches: dict[tuple[str, str], Watch] = {}
        self._due: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, orchestrator: Orchestrator) -> HealthMonitor | None:
        """The monitor of the instances that restart replicas; None when it is off or
        none does."""
        if not orchestrator.settings.deployments.health_monitor:
            return None
        instances = orchestrator.catalog.doing("replica", "restart")
        return cls(orchestrator, instances) if instances else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deployment-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def view(self, instance: str, deployment: str) -> dict[str, ReplicaHealth]:
        """This process's latest look at the deployment's replicas, by name."""
        watch = self.watches.get((instance, deployment))
        return dict(watch.replicas) if watch is not None else {}

    # -- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("deployment health monitor: sweep failed")
            await asyncio.sleep(self._pause())

    def _pause(self) -> float:
        if not self._due:
            return TICK
        return min(TICK, max(0.05, min(self._due.values()) - time.monotonic()))

    async def sweep(self) -> None:
        """Check each watched deployment whose period has come (at once)."""
        engine = self.orchestrator.engine
        busy = {
            str((w["spec"] or {}).get("deployment_id"))
            for w in await workflows_in(engine, "deployment", deployment_events.ACTIVE, 1000)
        }
        rounds = []
        seen: set[tuple[str, str]] = set()
        now = time.monotonic()
        for instance in self.instances:
            for row in await list_resources(engine, instance, "deployment"):
                key = (instance, str(row["name"]))
                record = {**row["data"], "id": row["name"]}
                if record.get("state", "running") != "running" or key[1] in busy:
                    continue  # stopped, or being changed: counted afresh after
                seen.add(key)
                if self._due.get(key, 0.0) <= now:
                    self._due[key] = now + health_of(record).period_seconds
                    rounds.append(self.check(instance, record))
        for key in set(self.watches) - seen:
            del self.watches[key]
        for key in set(self._due) - seen:
            del self._due[key]
        for failed in await asyncio.gather(*rounds, return_exceptions=True):
            if isinstance(failed, Exception):
                log.error("deployment health monitor: a check failed", error=repr(failed))

    async def check(self, instance: str, record: dict[str, Any]) -> None:
        """One period of a deployment: probe its replicas, count, restart one that is
        due (one at a time: a restart is a change of the deployment)."""
        ident = str(record["id"])
        health = health_of(record)
        declared = self.orchestrator.catalog.lookup(instance, "replica", "list")
        try:
            listed = await self.orchestrator.read(declared, {"deployment": ident, "probe": True})
        except Exception as exc:
            log.warning(
                "deployment health monitor: no look at replicas", deployment=ident, error=str(exc)
            )
            return
        replicas: list[dict[str, Any]] = listed["replicas"]
        # The incarnation each replica's last task recorded: it waited for it to be ready.
        rows = await list_resources(self.orchestrator.engine, instance, "replica")
        recorded = {str(row["name"]): incarnation(row["data"]) for row in rows}
        watch = self.watches.setdefault((instance, ident), Watch())
        watch.keep_only({str(r["name"]) for r in replicas})
        for replica in replicas:
            name = str(replica["name"])
            watch.observe(
                name,
                incarnation(replica),
                bool(replica.get("running")) and bool(replica.get("healthy")),
                health.failure_threshold,
                was_ready=recorded.get(name) == incarnation(replica),
                at=replica.get("last_health_check") or _now(),
            )
        due = watch.failing(health.failure_threshold)
        if due:
            await self.restart(instance, record, replicas, due[0])

    async def restart(
        self, instance: str, record: dict[str, Any], replicas: list[dict[str, Any]], name: str
    ) -> str | None:
        """Submit the restart of `name`, unless the deployment is being changed or
        another process claimed this state of it first; the workflow's id."""
        orchestrator = self.orchestrator
        ident = str(record["id"])
        if any(
            (w["spec"] or {}).get("deployment_id") == ident
            for w in await workflows_in(
                orchestrator.engine, "deployment", deployment_events.ACTIVE, 1000
            )
        ):
            return None
        state = "|".join(sorted(incarnation(r) for r in replicas))
        digest = hashlib.sha256(f"{instance}|{ident}|{state}".encode()).hexdigest()
        key = RequestKey(SCOPE, f"{ident}:{digest}", hashlib.sha256(name.encode()).hexdigest())
        claimed_at, held = await orchestrator.idempotency.claim(key)
        if held is not None:
            log.info(
                "deployment health monitor: another process decided", deployment=ident, replica=name
            )
            return None
        failures = self.view(instance, ident)[name].failures
        try:
            task = orchestrator.catalog.task(
                instance,
                "replica",
                "restart",
                name=f"restart {name}",
                params={"name": name, "deployment": ident},
                origin="health monitor",
            )
            spec = deployment_events.deployment_workflow(
                ident,
                "restart",
                [task],
                app_name=record.get("app_name"),
                replica=name,
                reason=f"failed its health check {failures} times in a row",
                url=deployment_events.url_of(record, [], _suffix(orchestrator, instance)),
                state=record.get("state"),
            )
            workflow_id = await orchestrator.submit(spec, owner=record.get("owner"))
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(orchestrator.idempotency.forget(key, claimed_at))
            raise
        await orchestrator.idempotency.keep(key, claimed_at, Answer(201, [], workflow_id))
        log.info(
            "deployment health monitor: restarting a replica",
            deployment=ident,
            replica=name,
            failures=failures,
            workflow=workflow_id,
        )
        watch = self.watches.get((instance, ident))
        if watch is not None:
            watch.replicas.pop(name, None)
        return workflow_id


def _suffix(orchestrator: Orchestrator, instance: str) -> str:
    return str(getattr(orchestrator.providers.get(instance), "domain_suffix", "") or "")
