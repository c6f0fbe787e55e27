"""The `containers` provider type: a container engine's Docker Engine REST API.

Config (`[providers.<name>]`, `type = "containers"`):

- `socket`: the engine's unix socket (default: `DOCKER_HOST` when it is `unix://…`,
  else `/run/podman/podman.sock`); `providers.containers.podman` starts a podman
  service with the settings that work without touching the host's firewall;
- `network_mode`: the containers' network (default `slirp4netns`: podman's user-mode
  network, which publishes ports without iptables rules; `bridge` for a Docker Engine);
- `publish_ip`: where published ports listen (default `127.0.0.1`);
- `stop_timeout`: seconds a container has to stop before it is killed (default 5);
- `max_replicas`: the most replicas a deployment may ask for (default 20);
- `quota_per_user`: the most deployments one user who is not an administrator may
  have (default 10; 0: no limit), 409 `QUOTA_EXCEEDED` past it;
- `limits`: apply a deployment's `resources` as cgroup limits (default true);
- `domain_suffix`: a deployment's `url` is `http://<app_name>.<domain_suffix>` (default
  none: the first replica's loopback address).

Every container it makes carries the labels `provisioning.instance` and
`provisioning.task` (the task that made it: a retried task adopts its own container
rather than making a second); a deployment's replicas also `provisioning.deployment`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiodocker
import httpx
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
    ResourceChange,
)
from providers.containers._engine import connect, engine_error, runtime_name, version_of
from providers.containers._errors import EngineNotFound, EngineRefused
from providers.containers._kinds import (
    KINDS,
    ContainerCreate,
    DeploymentCreate,
    DeploymentUpdate,
    HealthCheck,
    ReplicaCreate,
    ReplicaRestart,
    Resources,
    log_entry,
)

LABEL = "provisioning"
INSTANCE, TASK, DEPLOYMENT, HEALTH = (
    f"{LABEL}.instance",
    f"{LABEL}.task",
    f"{LABEL}.deployment",
    f"{LABEL}.health",
)
_SETTINGS = {
    "socket",
    "network_mode",
    "publish_ip",
    "stop_timeout",
    "max_replicas",
    "quota_per_user",
    "limits",
    "domain_suffix",
}
_MEMORY = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def default_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else "/run/podman/podman.sock"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ContainersProvider(BaseProvider):
    """Containers, images, deployment replicas and deployment records (`_kinds`)."""

    type_name: ClassVar[str] = "containers"
    kinds: ClassVar[tuple[Kind, ...]] = KINDS

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        unknown = sorted(set(config) - _SETTINGS - {"type"})
        if unknown:
            raise ProviderConfigError(f"unknown settings {unknown}; known: {sorted(_SETTINGS)}")
        self.socket = str(config.get("socket") or default_socket())
        self.network_mode = str(config.get("network_mode", "slirp4netns"))
        self.publish_ip = str(config.get("publish_ip", "127.0.0.1"))
        try:
            self.stop_timeout = int(config.get("stop_timeout", 5))
            self.max_replicas = int(config.get("max_replicas", 20))
            self.quota_per_user = int(config.get("quota_per_user", 10))
        except (TypeError, ValueError) as exc:
            raise ProviderConfigError(
                f"stop_timeout, max_replicas and quota_per_user are integers: {exc}"
            ) from exc
        if self.quota_per_user < 0:
            raise ProviderConfigError("quota_per_user is 0 (no limit) or more")
        #: Checks then submissions, one at a time in this process (the API's): two
        #: requests do not both pass a quota or uniqueness check only one of them may.
        self.deciding = asyncio.Lock()
        self.limits = bool(config.get("limits", True))
        self.domain_suffix = str(config.get("domain_suffix", ""))

    # -- validation ---------------------------------------------------------------------

    def validate(self, kind: str, operation: str, params: Mapping[str, Any]) -> msgspec.Struct:
        struct = super().validate(kind, operation, params)
        replicas = getattr(struct, "replicas", None)
        limited = isinstance(struct, DeploymentCreate | DeploymentUpdate)
        if limited and replicas is not None and replicas > self.max_replicas:
            raise InvalidParams("replicas", f"at most {self.max_replicas} on '{self.name}'")
        return struct

    # -- dispatch -----------------------------------------------------------------------

    async def apply(self, call: ActionCall) -> ActionResult:
        kind, operation = self.declared(call)
        handler = getattr(self, f"_{kind.name}_{operation.name}")
        result: ActionResult = await handler(call)
        return result

    async def compensate(self, call: ActionCall, applied: ActionResult) -> ActionResult:
        """An apply that recorded how to undo it (`result.undo`: the params of its undo
        operation, the state it replaced) is undone with those; else the declared undo."""
        undo = applied.result.get("undo")
        kind, operation = self.declared(call)
        if isinstance(undo, dict) and operation.undo is not None:
            undone = kind.operation(operation.undo)
            assert undone is not None
            return await self.apply(replace(call, action=kind.action(undone), params=undo))
        return await super().compensate(call, applied)

    async def check(self, call: ActionCall) -> ActionResult:
        kind, operation = self.declared(call)
        named = call.params.get(kind.key or "name", "")
        return ActionResult(output=f"would {operation.name} {kind.name} {named}".rstrip())

    # -- containers ---------------------------------------------------------------------

    def _labels(self, call: ActionCall, extra: Mapping[str, str]) -> dict[str, str]:
        return {**extra, INSTANCE: self.name, TASK: call.task_id}

    async def _find(self, client: aiodocker.Docker, name: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = await client.containers.container(name).show()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise
        return info

    async def _make(
        self,
        call: ActionCall,
        spec: ContainerCreate,
        resources: Resources | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The container as created (or adopted: a retry of the task that made it);
        True when this call created it."""
        async with connect(self.socket) as client:
            existing = await self._find(client, spec.name)
            if existing is not None:
                if (existing["Config"].get("Labels") or {}).get(TASK) != call.task_id:
                    raise EngineRefused(409, f"a container named {spec.name} already exists")
                # Made by an earlier attempt of this task (a crash, a timeout): adopted,
                # and started if that attempt did not get so far.
                if spec.start and not existing["State"].get("Running"):
                    container = client.containers.container(spec.name)
                    await container.start()
                    existing = await container.show()
                return existing, False
            await self._ensure_image(client, spec.image)
            ports: dict[str, JSON] = {f"{p.container_port}/{p.protocol}": {} for p in spec.ports}
            bindings = {
                f"{p.container_port}/{p.protocol}": [
                    {"HostIp": self.publish_ip, "HostPort": str(p.host_port or "")}
                ]
                for p in spec.ports
            }
            host: dict[str, Any] = {"PortBindings": bindings, "NetworkMode": self.network_mode}
            if resources is not None and self.limits:
                host.update(_limits(resources))
            config: dict[str, Any] = {
                "Image": spec.image,
                "Env": [f"{k}={v}" for k, v in spec.env.items()],
                "Labels": self._labels(call, spec.labels),
                "ExposedPorts": ports,
                "HostConfig": host,
                "StopTimeout": self.stop_timeout,
            }
            if spec.command is not None:
                config["Cmd"] = spec.command
            container = await client.containers.create(config, name=spec.name)
            if spec.start:
                await container.start()
            info: dict[str, Any] = await container.show()
            return info, True

    async def _ensure_image(self, client: aiodocker.Docker, image: str) -> None:
        try:
            await client.images.inspect(image)
            return
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
        try:
            await client.images.pull(image)
        except aiodocker.DockerError as exc:
            raise EngineRefused(
                exc.status, f"image {image} cannot be had: {engine_error(exc).message}"
            ) from exc

    async def _container_create(self, call: ActionCall) -> ActionResult:
        spec = msgspec.convert(call.params, ContainerCreate)
        info, made = await self._make(call, spec)
        data = container_out(info)
        return ActionResult(
            output=f"{'created' if made else 'adopted'} container {spec.name}",
            result=data,
            resources=(ResourceChange("container", spec.name, "create", data=data),),
        )

    async def _container_start(self, call: ActionCall) -> ActionResult:
        name = call.params["name"]
        async with connect(self.socket) as client:
            await client.containers.container(name).start()
            info = await client.containers.container(name).show()
        data = container_out(info)
        return ActionResult(
            output=f"started container {name}",
            result=data,
            resources=(ResourceChange("container", name, "update", data=data),),
        )

    async def _container_stop(self, call: ActionCall) -> ActionResult:
        name = call.params["name"]
        async with connect(self.socket) as client:
            await client.containers.container(name).stop(t=self.stop_timeout)
            info = await client.containers.container(name).show()
        data = container_out(info)
        return ActionResult(
            output=f"stopped container {name}",
            result=data,
            resources=(ResourceChange("container", name, "update", status="stopped", data=data),),
        )

    async def _container_delete(self, call: ActionCall) -> ActionResult:
        name, force = call.params["name"], bool(call.params.get("force", False))
        async with connect(self.socket) as client:
            info = await self._find(client, name)
            if info is None:
                return ActionResult(output=f"container {name} does not exist")
            if info["State"].get("Running") and not force:
                raise EngineRefused(409, f"container {name} is running: stop it first")
            await client.containers.container(name).delete(force=True)
        return ActionResult(
            output=f"removed container {name}",
            resources=(ResourceChange("container", name, "delete"),),
        )

    async def _container_read(self, call: ActionCall) -> ActionResult:
        async with connect(self.socket) as client:
            info = await client.containers.container(call.params["name"]).show()
        return ActionResult(result=container_out(info))

    async def _container_list(self, call: ActionCall) -> ActionResult:
        labels = call.params.get("labels") or {}
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]} if labels else {}
        async with connect(self.socket) as client:
            found = await client.containers.list(
                all=bool(call.params.get("all", True)), filters=json.dumps(filters)
            )
            found, infos = await _shown(found)
            runtime = runtime_name(await version_of(client, self.socket))
        return ActionResult(
            result={"containers": [container_out(i) for i in infos], "runtime": runtime}
        )

    async def _container_logs(self, call: ActionCall) -> ActionResult:
        async with connect(self.socket) as client:
            container = client.containers.container(call.params["name"])
            lines = await container.log(
                stdout=True, stderr=True, timestamps=True, tail=int(call.params.get("tail", 100))
            )
            runtime = runtime_name(await version_of(client, self.socket))
        return ActionResult(
            result={"lines": [str(line).rstrip("\n") for line in lines], "runtime": runtime}
        )

    # -- images ---------------------------------------------------------------------------

    async def _image_pull(self, call: ActionCall) -> ActionResult:
        image = call.params["image"]
        async with connect(self.socket) as client:
            await client.images.pull(image)
            info = await client.images.inspect(image)
        return ActionResult(output=f"pulled {image}", result={"image": image, "id": info.get("Id")})

    async def pull(self, image: str, auth: Mapping[str, str] | None) -> str:
        """Pull an image with the given registry credentials, used for this pull only
        (never recorded); its id. Raises `EngineRefused` when it cannot be had."""
        async with connect(self.socket) as client:
            try:
                await client.images.pull(image, auth=dict(auth) if auth else None)
            except aiodocker.DockerError as exc:
                raise EngineRefused(
                    exc.status, f"image {image} cannot be had: {engine_error(exc).message}"
                ) from exc
            info = await client.images.inspect(image)
        return str(info.get("Id", ""))

    # -- replicas -----------------------------------------------------------------------

    async def _replica_create(self, call: ActionCall) -> ActionResult:
        spec = msgspec.convert(call.params, ReplicaCreate)
        health = spec.health_check or HealthCheck()
        labels = {DEPLOYMENT: spec.deployment, HEALTH: msgspec.json.encode(health).decode()}
        container = ContainerCreate(
            name=spec.name,
            image=spec.image,
            env={**spec.env_vars, "PORT": str(spec.port)}
            if "PORT" not in spec.env_vars
            else spec.env_vars,
            ports=[_binding(spec.port)],
            labels=labels,
            start=True,
        )
        # A name another task's container holds is refused by `_make`: nothing to remove.
        info, made = await self._make(call, container, spec.resources)
        try:
            await self._healthy(spec.name, info, spec.port, health)
        except PermanentProviderError:
            await self._remove(spec.name)
            raise
        except asyncio.CancelledError:
            # Stopped before it ended (another replica failed and the workflow stops, a
            # timeout): no completed task records this replica, so no undo would ever
            # remove it. Removed here, whatever cancels the wait on the removal (only an
            # engine that does not answer then leaves it behind).
            with contextlib.suppress(Exception):
                await asyncio.shield(self._remove(spec.name))
            raise
        data = {**replica_out(info, spec.port), "params": call.params}
        return ActionResult(
            output=f"{'created' if made else 'adopted'} replica {spec.name}: healthy",
            result=replica_out(info, spec.port),
            resources=(ResourceChange("replica", spec.name, "create", data=data),),
        )

    async def _replica_delete(self, call: ActionCall) -> ActionResult:
        name = call.params["name"]
        recorded = await call.inventory.get("replica", name)
        undo = (recorded or {}).get("params")
        removed = await self._remove(name)
        if not removed and recorded is None:
            return ActionResult(output=f"replica {name} does not exist")
        return ActionResult(
            output=f"removed replica {name}",
            result={"undo": undo} if isinstance(undo, dict) else {},
            resources=(ResourceChange("replica", name, "delete"),),
        )

    async def _replica_stop(self, call: ActionCall) -> ActionResult:
        name = call.params["name"]
        async with connect(self.socket) as client:
            await client.containers.container(name).stop(t=self.stop_timeout)
            info = await client.containers.container(name).show()
        recorded = await call.inventory.get("replica", name) or {}
        data = {**recorded, **replica_out(info, _port(info)), "running": False}
        data.pop("status", None)
        return ActionResult(
            output=f"stopped replica {name}",
            resources=(ResourceChange("replica", name, "update", status="stopped", data=data),),
        )

    async def _replica_start(self, call: ActionCall) -> ActionResult:
        name = call.params["name"]
        async with connect(self.socket) as client:
            await client.containers.container(name).start()
            info = await client.containers.container(name).show()
        port = _port(info)
        await self._healthy(name, info, port, _health_of(info))
        recorded = await call.inventory.get("replica", name) or {}
        data = {**recorded, **replica_out(info, port)}
        data.pop("status", None)
        return ActionResult(
            output=f"started replica {name}: healthy",
            resources=(ResourceChange("replica", name, "update", data=data),),
        )

    async def _replica_restart(self, call: ActionCall) -> ActionResult:
        """Restart the replica's container and wait for its health check; then count it
        in the deployment's record (`restarts`: by replica) and the replica's row."""
        spec = msgspec.convert(call.params, ReplicaRestart)
        async with connect(self.socket) as client:
            container = client.containers.container(spec.name)
            info = await container.show()
            labelled = (info["Config"].get("Labels") or {}).get(DEPLOYMENT)
            if labelled != spec.deployment:
                raise PermanentProviderError(
                    f"container {spec.name} is not a replica of deployment {spec.deployment}"
                )
            await container.restart(t=self.stop_timeout)
            info = await container.show()
        port = _port(info)
        await self._healthy(spec.name, info, port, _health_of(info))
        changes: list[ResourceChange] = []
        record = await call.inventory.get("deployment", spec.deployment)
        counted = 1
        if record is not None:
            restarts = {**(record.get("restarts") or {})}
            counted = restarts[spec.name] = int(restarts.get(spec.name) or 0) + 1
            data = {**record, "restarts": restarts}
            data.pop("status", None)
            changes.append(ResourceChange("deployment", spec.deployment, "update", data=data))
        recorded = await call.inventory.get("replica", spec.name) or {}
        row = {**recorded, **replica_out(info, port), "restarts": counted}
        row.pop("status", None)
        changes.append(ResourceChange("replica", spec.name, "update", data=row))
        return ActionResult(
            output=f"restarted replica {spec.name} (restart {counted}): healthy",
            result={**replica_out(info, port), "restarts": counted},
            resources=tuple(changes),
        )

    async def _replica_list(self, call: ActionCall) -> ActionResult:
        deployment = call.params["deployment"]
        filters = json.dumps({"label": [f"{DEPLOYMENT}={deployment}", f"{INSTANCE}={self.name}"]})
        async with connect(self.socket) as client:
            found = await client.containers.list(all=True, filters=filters)
            found, infos = await _shown(found)
        replicas = [replica_out(info, _port(info)) for info in infos]
        if call.params.get("probe", True):
            checks = [
                probe(self.publish_ip, r["host_port"], _health_of(info))
                if r["running"] and r["host_port"]
                else _false()
                for r, info in zip(replicas, infos, strict=True)
            ]
            for replica, healthy in zip(replicas, await asyncio.gather(*checks), strict=True):
                replica["healthy"] = healthy
            checked = now()
            for replica in replicas:
                replica["last_health_check"] = checked
        return ActionResult(result={"replicas": sorted(replicas, key=lambda r: r["created"])})

    async def _replica_stats(self, call: ActionCall) -> ActionResult:
        """Each replica's CPU, memory, network and restarts from the engine's stats API:
        two one-shot samples `STATS_INTERVAL` apart (every replica at once) give the CPU
        share over that interval; the counters are the engine's own."""
        deployment = call.params["deployment"]
        filters = json.dumps({"label": [f"{DEPLOYMENT}={deployment}", f"{INSTANCE}={self.name}"]})
        async with connect(self.socket) as client:
            found = await client.containers.list(all=True, filters=filters)
            found, infos = await _shown(found)
            running = [c for c, i in zip(found, infos, strict=True) if i["State"].get("Running")]
            first = await asyncio.gather(*(_sample(c) for c in running))
            await asyncio.sleep(STATS_INTERVAL)
            second = await asyncio.gather(*(_sample(c) for c in running))
        samples = {c.id: (a, b) for c, a, b in zip(running, first, second, strict=True)}
        replicas = []
        for container, info in zip(found, infos, strict=True):
            out = replica_out(info, _port(info))
            pair = samples.get(container.id)
            replicas.append({**out, **(stats_of(*pair) if pair else stats_of(None, None))})
        return ActionResult(
            result={
                "replicas": sorted(replicas, key=lambda r: r["created"]),
                "timestamp": now(),
                "interval_seconds": STATS_INTERVAL,
            }
        )

    async def follow_logs(self, deployment: str, tail: int) -> AsyncIterator[JSON]:
        """The deployment's replicas' log lines: the last `tail` of each, then every new
        one as written, from every replica (one the deployment gains later too, looked
        for each `REPLICAS_POLL` s), until the caller stops iterating. Each engine
        stream ends with the iteration (its connection closes with the client)."""
        lines: asyncio.Queue[JSON] = asyncio.Queue(maxsize=1000)
        filters = json.dumps({"label": [f"{DEPLOYMENT}={deployment}", f"{INSTANCE}={self.name}"]})

        async def follow(client: aiodocker.Docker, name: str) -> None:
            container = client.containers.container(name)
            with contextlib.suppress(aiodocker.DockerError):
                stream = container.log(
                    stdout=True, stderr=True, follow=True, timestamps=True, tail=tail
                )
                try:
                    async for raw in stream:
                        for line in str(raw).splitlines():
                            stamp, _, message = line.partition(" ")
                            await lines.put(log_entry(stamp, message, name))
                finally:
                    await stream.aclose()  # type: ignore[attr-defined]

        async with connect(self.socket) as client:
            following: dict[str, asyncio.Task[None]] = {}

            async def watch() -> None:
                while True:
                    for container in await client.containers.list(all=True, filters=filters):
                        name = str((container["Names"] or [""])[0]).lstrip("/")
                        if name and name not in following:
                            following[name] = asyncio.create_task(follow(client, name))
                    await asyncio.sleep(REPLICAS_POLL)

            watcher = asyncio.create_task(watch())
            try:
                while True:
                    getter = asyncio.ensure_future(lines.get())
                    done, _ = await asyncio.wait(
                        {getter, watcher}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter not in done:
                        getter.cancel()
                        watcher.result()  # the engine's error, raised
                    yield getter.result()
            finally:
                tasks = [watcher, *following.values()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _remove(self, name: str) -> bool:
        async with connect(self.socket) as client:
            if await self._find(client, name) is None:
                return False
            try:
                await client.containers.container(name).delete(force=True)
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise
        return True

    async def _healthy(
        self, name: str, info: Mapping[str, Any], port: int, health: HealthCheck
    ) -> None:
        """Return once the replica answers its health check; a permanent error once it
        failed `failure_threshold` checks in a row (or its container exited)."""
        host_port = _host_port(info, port)
        if host_port is None:
            raise PermanentProviderError(f"replica {name}: port {port} is not published")
        await asyncio.sleep(health.initial_delay_seconds)
        failures = 0
        while True:
            if await self._answers_within_period(host_port, health):
                return
            failures += 1
            async with connect(self.socket) as client:
                state = (await client.containers.container(name).show())["State"]
            if not state.get("Running"):
                raise PermanentProviderError(
                    f"replica {name} exited (code {state.get('ExitCode')}) before it was healthy"
                )
            if failures >= health.failure_threshold:
                raise PermanentProviderError(
                    f"replica {name} failed its health check (GET {health.path} on port "
                    f"{host_port}) {failures} times in a row"
                )

    async def _answers_within_period(self, host_port: int, health: HealthCheck) -> bool:
        """Whether a check passes within one `period_seconds`: retried meanwhile, after
        `RETRY_FIRST` s growing to `RETRY_MOST`, so a replica is seen ready as soon as it
        answers rather than a period later (a period without a pass is one failure)."""
        deadline = time.monotonic() + health.period_seconds
        gap = RETRY_FIRST
        async with _checker(health) as client:
            while True:
                if await probe(self.publish_ip, host_port, health, client):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                await asyncio.sleep(min(gap, left))
                gap = min(gap * 1.2, RETRY_MOST)

    # -- deployment records -------------------------------------------------------------

    async def _deployment_create(self, call: ActionCall) -> ActionResult:
        spec = msgspec.convert(call.params, DeploymentCreate)
        for other in await call.inventory.list("deployment"):
            if (
                other.get("name") != spec.id
                and other.get("owner") == spec.owner
                and other.get("app_name") == spec.app_name
            ):
                raise PermanentProviderError(
                    f"app_name {spec.app_name} is already deployed ({other.get('name')})"
                )
        recorded = await call.inventory.get("deployment", spec.id)
        stamp = now()
        data = {
            **msgspec.to_builtins(spec),
            "state": "running",
            "created_at": (recorded or {}).get("created_at", stamp),
            "updated_at": stamp,
        }
        return ActionResult(
            output=f"recorded deployment {spec.id} ({spec.app_name})",
            result={"id": spec.id},
            resources=(ResourceChange("deployment", spec.id, "create", data=data),),
        )

    async def _deployment_update(self, call: ActionCall) -> ActionResult:
        spec = msgspec.convert(call.params, DeploymentUpdate)
        recorded = await call.inventory.get("deployment", spec.id)
        if recorded is None:
            raise PermanentProviderError(f"deployment {spec.id} is not recorded")
        changes = {
            k: v for k, v in msgspec.to_builtins(spec).items() if v is not None and k != "id"
        }
        if spec.domains is not None:
            await _domains_free(call, spec.id, [d.domain for d in spec.domains])
        previous = {k: recorded.get(k) for k in changes}
        data = {**recorded, **changes, "updated_at": now()}
        data.pop("status", None)
        return ActionResult(
            output=f"updated deployment {spec.id}: {', '.join(sorted(changes)) or 'nothing'}",
            result={"undo": {"id": spec.id, **previous}},
            resources=(ResourceChange("deployment", spec.id, "update", data=data),),
        )

    async def _deployment_delete(self, call: ActionCall) -> ActionResult:
        ident = call.params["id"]
        recorded = await call.inventory.get("deployment", ident)
        if recorded is None:
            return ActionResult(output=f"deployment {ident} is not recorded")
        fields = set(DeploymentCreate.__struct_fields__)
        undo = {k: v for k, v in recorded.items() if k in fields}
        return ActionResult(
            output=f"forgot deployment {ident}",
            result={"undo": undo},
            resources=(ResourceChange("deployment", ident, "delete"),),
        )


async def _domains_free(call: ActionCall, ident: str, domains: list[str]) -> None:
    """Refuse a domain another deployment holds (compared lowercased)."""
    wanted = {d.lower() for d in domains}
    for other in await call.inventory.list("deployment"):
        if other.get("name") == ident:
            continue
        held = {str(d.get("domain", "")).lower() for d in other.get("domains") or []}
        taken = sorted(wanted & held)
        if taken:
            raise PermanentProviderError(
                f"domain {taken[0]} is already mapped to deployment {other.get('name')}"
            )


def _checker(health: HealthCheck) -> httpx.AsyncClient:
    """An HTTP client for health checks, which are plain HTTP (`probe` builds the URL):
    no TLS context to make (loading the CA bundle costs tens of milliseconds, more than
    a check) and no proxy from the environment."""
    # S501: no TLS is ever spoken through it (http:// only), so nothing is left unverified.
    return httpx.AsyncClient(timeout=health.timeout_seconds, trust_env=False, verify=False)  # noqa: S501


async def probe(
    ip: str, port: int, health: HealthCheck, client: httpx.AsyncClient | None = None
) -> bool:
    """One HTTP health check: GET `path`, a 2xx or 3xx within `timeout_seconds`."""
    url = f"http://{ip}:{port}{health.path}"
    try:
        if client is not None:
            response = await client.get(url)
        else:
            async with _checker(health) as own:
                response = await own.get(url)
    except httpx.HTTPError:
        return False
    return 200 <= response.status_code < 400


#: Seconds between the two stats samples that give a replica's CPU share.
STATS_INTERVAL = 0.5
#: Seconds between two health checks of a replica not yet ready, at first and at most.
RETRY_FIRST, RETRY_MOST = 0.05, 1.0
#: Seconds between looks for replicas a followed deployment gained.
REPLICAS_POLL = 2.0


async def _shown(found: list[Any]) -> tuple[list[Any], list[dict[str, Any]]]:
    """The listed containers still there, with their details: one removed between the
    list and its look (a replica a workflow just replaced) is left out."""
    kept, infos = [], []
    for container in found:
        try:
            info: dict[str, Any] = await container.show()
        except aiodocker.DockerError as exc:
            gone = exc.status == 404 or "no such container" in str(exc.message).lower()
            if not gone:
                raise
            continue
        kept.append(container)
        infos.append(info)
    return kept, infos


async def _sample(container: Any) -> Mapping[str, Any] | None:
    try:
        found = await container.stats(stream=False)
    except aiodocker.DockerError:
        return None
    if isinstance(found, list):
        return found[0] if found else None
    return found if isinstance(found, Mapping) else None


def stats_of(first: Mapping[str, Any] | None, second: Mapping[str, Any] | None) -> JSON:
    """A replica's figures from two stats samples (None: it is not running)."""
    if second is None:
        return {
            "cpu_percent": 0.0,
            "cpu_seconds": 0.0,
            "memory_bytes": 0,
            "memory_limit_bytes": 0,
            "memory_percent": 0.0,
            "network": {"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0},
        }
    cpu = second.get("cpu_stats") or {}
    total = int((cpu.get("cpu_usage") or {}).get("total_usage") or 0)
    system = int(cpu.get("system_cpu_usage") or 0)
    before = (first or {}).get("cpu_stats") or {}
    total_before = int((before.get("cpu_usage") or {}).get("total_usage") or 0)
    system_before = int(before.get("system_cpu_usage") or 0)
    cpus = int(cpu.get("online_cpus") or 1)
    percent = 0.0
    if first is not None and system > system_before and total >= total_before:
        percent = (total - total_before) / (system - system_before) * cpus * 100
    memory = second.get("memory_stats") or {}
    used, limit = int(memory.get("usage") or 0), int(memory.get("limit") or 0)
    network = {"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0}
    for interface in (second.get("networks") or {}).values():
        for key in network:
            network[key] += int(interface.get(key) or 0)
    return {
        "cpu_percent": round(percent, 2),
        "cpu_seconds": round(total / 1e9, 3),
        "memory_bytes": used,
        "memory_limit_bytes": limit,
        "memory_percent": round(used / limit * 100, 2) if limit else 0.0,
        "network": network,
    }


async def _false() -> bool:
    return False


def _binding(port: int) -> Any:
    from providers.containers._kinds import PortBinding

    return PortBinding(container_port=port)


def _health_of(info: Mapping[str, Any]) -> HealthCheck:
    raw = (info["Config"].get("Labels") or {}).get(HEALTH)
    try:
        return msgspec.json.decode(raw, type=HealthCheck) if raw else HealthCheck()
    except msgspec.DecodeError:
        return HealthCheck()


def _port(info: Mapping[str, Any]) -> int:
    """The (first) container port a replica publishes."""
    for key in info["HostConfig"].get("PortBindings") or {}:
        return int(str(key).split("/")[0])
    return 0


def _host_port(info: Mapping[str, Any], port: int) -> int | None:
    for source in (
        info.get("NetworkSettings", {}).get("Ports"),
        info["HostConfig"].get("PortBindings"),
    ):
        for binding in (source or {}).get(f"{port}/tcp") or []:
            if str(binding.get("HostPort") or "0") not in ("", "0"):
                return int(binding["HostPort"])
    return None


def _limits(resources: Resources) -> dict[str, int]:
    limits: dict[str, int] = {}
    if resources.cpu is not None:
        cpus = (
            int(resources.cpu[:-1]) / 1000 if resources.cpu.endswith("m") else float(resources.cpu)
        )
        if cpus > 0:
            limits["NanoCpus"] = int(cpus * 1_000_000_000)
    if resources.memory is not None:
        digits = resources.memory.rstrip("KMGi")
        limits["Memory"] = int(digits) * _MEMORY[resources.memory[len(digits) :]]
    return limits


def container_out(info: Mapping[str, Any]) -> JSON:
    """A container as the API shows it (seed 000's fields)."""
    state = info.get("State") or {}
    config = info.get("Config") or {}
    ports: list[JSON] = []
    for key, bindings in ((info.get("NetworkSettings") or {}).get("Ports") or {}).items():
        for binding in bindings or []:
            ports.append(
                {
                    "containerPort": int(str(key).split("/")[0]),
                    "protocol": str(key).partition("/")[2] or "tcp",
                    "hostIp": binding.get("HostIp", ""),
                    "hostPort": int(binding.get("HostPort") or 0),
                }
            )
    return {
        "id": info.get("Id", ""),
        "name": str(info.get("Name", "")).lstrip("/"),
        "image": config.get("Image", ""),
        "status": state.get("Status", ""),
        "state": state.get("Status", ""),
        "running": bool(state.get("Running")),
        "created": info.get("Created", ""),
        "started_at": state.get("StartedAt"),
        "restart_count": int(info.get("RestartCount") or 0),
        "labels": config.get("Labels") or {},
        "ports": ports,
    }


def replica_out(info: Mapping[str, Any], port: int) -> JSON:
    out = container_out(info)
    return {
        "name": out["name"],
        "container_id": out["id"],
        "image": out["image"],
        "state": out["state"],
        "running": out["running"],
        "created": out["created"],
        "started_at": out["started_at"],
        "restart_count": out["restart_count"],
        "deployment": out["labels"].get(DEPLOYMENT),
        "port": port,
        "host_port": _host_port(info, port) or 0,
    }


__all__ = ["ContainersProvider", "EngineNotFound", "container_out", "probe"]
