"""App deployments (seed 002): a thin adapter over the `containers` provider type.

A deployment is a record (an inventory row of kind `deployment`, named by its id) and N
replica containers labelled with that id, each publishing `port` on a free loopback
port. Every change is a workflow of persisted tasks answered at once: create records the
deployment then runs each replica (a replica's task completes once its health check
passes); scale adds or removes replica tasks; stop, start and delete do each replica;
update replaces the replicas one by one, each new one healthy before an old one goes.
Create, scale and update roll back by themselves when a task fails (the previous spec is
restored by compensation). Reads merge the record with the engine's live state.

Status: `pending` while the create workflow runs, `updating` while another one does,
`failed` when the create failed, else the recorded state (`running`, `stopped`).

Ownership: a deployment belongs to whoever created it; users see only theirs (others
are 404), administrators all. Policies name it `deployments:<id>`.

`registry_auth` is used for the pull made while the request is checked (that is how an
image that cannot be had is a 422) and is then forgotten: never stored, never echoed.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Controller, Request, Response, WebSocket, delete, get, patch, post, put
from litestar import websocket as websocket_route
from litestar.datastructures import State
from litestar.exceptions import WebSocketDisconnect
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from orchestrator import deployment_events
from orchestrator.api.controllers import orchestrator_of
from orchestrator.api.security import Security, access_of
from orchestrator.api.sockets import cancel_when_closed, refuse, socket_credential, while_allowed
from orchestrator.deployment_events import url_of, urls_of
from orchestrator.deployment_health import HealthMonitor, health_of, incarnation
from orchestrator.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    ProviderFailed,
    QuotaExceeded,
)
from orchestrator.http.access import Principal
from orchestrator.http.envelope import Envelope, ErrorBody
from orchestrator.ids import new_id
from orchestrator.planner import TaskLimits
from orchestrator.service import Orchestrator
from orchestrator.specs import TaskSpec
from orchestrator.store.workflows import get_resource, get_workflow, list_resources, workflows_in
from providers.base import InvalidParams
from providers.containers import EngineFailed, EngineRefused, EngineUnavailable
from providers.containers._kinds import (
    AppName,
    EnvName,
    EnvValue,
    HealthCheck,
    HostName,
    ImageRef,
    Port,
    Resources,
    log_entry,
)

ACTIVE = deployment_events.ACTIVE
FAILED = ("Failed", "RolledBack", "Cancelled")
STATUSES = ("pending", "running", "stopped", "failed", "updating")

Replicas = Annotated[int, msgspec.Meta(ge=0, le=10_000)]


class NoRuntime(DomainError):
    status_code = 503
    code = "NO_RUNTIME_AVAILABLE"


class DockerError(DomainError):
    status_code = 502
    code = "DOCKER_ERROR"


#: What an engine adds to the envelope's errors: the engine refused (`DOCKER_ERROR`), or
#: none is configured or answering (`NO_RUNTIME_AVAILABLE`).
ENGINE_ERRORS = {
    502: ResponseSpec(
        data_container=ErrorBody,
        description="Bad Gateway: `code` DOCKER_ERROR, the engine's message",
        generate_examples=False,
    ),
    503: ResponseSpec(
        data_container=ErrorBody,
        description="Service Unavailable: `code` NO_RUNTIME_AVAILABLE",
        generate_examples=False,
    ),
}


class RegistryAuth(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(max_length=256)]
    password: Annotated[str, msgspec.Meta(max_length=4096)]


class DeploymentIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    app_name: AppName
    image: ImageRef
    port: Port
    env_vars: dict[EnvName, EnvValue] = {}
    replicas: Replicas = 1
    resources: Resources | None = None
    health_check: HealthCheck | None = None
    #: Used for the pull, then forgotten.
    registry_auth: RegistryAuth | None = None


class DeploymentUpdateIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    image: ImageRef | None = None
    env_vars: dict[EnvName, EnvValue] | None = None
    replicas: Replicas | None = None
    resources: Resources | None = None
    health_check: HealthCheck | None = None
    registry_auth: RegistryAuth | None = None


class ScaleIn(msgspec.Struct, forbid_unknown_fields=True):
    replicas: Replicas


class DomainIn(msgspec.Struct, forbid_unknown_fields=True):
    #: A host name (`myapp.example.com`): no scheme, port, path or empty label.
    domain: HostName


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None if value is None else str(value)


class Deployments:
    """What the endpoints share: the instance, the records, ownership and workflows."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        request: Request[Any, Any, Any] | WebSocket[Any, Any, Any],
    ) -> None:
        self.orchestrator = orchestrator
        self.request = request
        self.catalog = orchestrator.catalog
        doing = self.catalog.doing("deployment", "create")
        if not doing:
            raise NoRuntime(
                "no container engine is configured: add a provider instance of type "
                "'containers' (docs/deployments.md)"
            )
        self.instance = doing[0]
        self.provider: Any = self.catalog.providers[self.instance]
        principal = access_of(request.scope).principal
        self.principal: Principal | None = principal
        self.user = principal.user_id if principal is not None else None
        self.admin = principal is not None and "admin" in principal.roles

    # -- records ------------------------------------------------------------------------

    def visible(self, record: dict[str, Any]) -> bool:
        return self.admin or record.get("owner") == self.user

    async def workflows(self, statuses: tuple[str, ...], limit: int = 500) -> list[dict[str, Any]]:
        """Deployment workflows in these statuses, newest first."""
        return await workflows_in(self.orchestrator.engine, "deployment", statuses, limit)

    async def records(self) -> list[dict[str, Any]]:
        """Every deployment this principal may see: recorded ones and creates not yet
        recorded (or failed), with their status."""
        # Workflows before rows: a create ending between the two reads is then found
        # as a row, or as a create under way, never missed by both.
        workflows = await self.workflows((*ACTIVE, *FAILED))
        rows = await list_resources(self.orchestrator.engine, self.instance, "deployment")
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            record = {**row["data"], "id": row["name"], "workflow_id": row["workflow_id"]}
            record["updated_at"] = record.get("updated_at") or _ts(row["updated_at"])
            found[row["name"]] = record
        for workflow in workflows:
            request = workflow["spec"] or {}
            ident = request.get("deployment_id")
            if request.get("operation") != "create" or not ident or ident in found:
                continue
            if workflow["status"] in FAILED and any(
                w for w in found.values() if w.get("app_name") == request.get("app_name")
            ):
                continue
            found[ident] = {
                **(request.get("record") or {}),
                "id": ident,
                "workflow_id": workflow["id"],
                "created_at": _ts(workflow["created_at"]),
                "updated_at": _ts(workflow["created_at"]),
                "state": "pending",
            }
        records = [r for r in found.values() if self.visible(r)]
        for record in records:
            await self.settle(record)
        return sorted(records, key=lambda r: str(r.get("created_at")), reverse=True)

    async def settle(self, record: dict[str, Any]) -> None:
        """The record's `status` and `error_message`, from its last workflow."""
        workflow = (
            await get_workflow(self.orchestrator.engine, record["workflow_id"])
            if record.get("workflow_id")
            else None
        )
        record["status"] = record.get("state", "running")
        record["error_message"] = None
        if workflow is None:
            return
        operation = (workflow.get("spec") or {}).get("operation")
        if workflow["status"] in ACTIVE:
            record["status"] = "pending" if operation == "create" else "updating"
        elif workflow["status"] in FAILED:
            record["error_message"] = workflow.get("error") or f"{operation} failed"
            if record.get("state") == "pending" or operation == "create":
                record["status"] = "failed"
        if record["status"] == "deleting":
            record["status"] = "updating"
        record["deployed_at"] = _ts(workflow.get("completed_at"))

    async def get(self, ident: str) -> dict[str, Any]:
        row = await get_resource(self.orchestrator.engine, self.instance, "deployment", ident)
        record: dict[str, Any] | None = None
        if row is not None:
            record = {**row["data"], "id": ident, "workflow_id": row["workflow_id"]}
            record["updated_at"] = record.get("updated_at") or _ts(row["updated_at"])
            await self.settle(record)
        else:
            record = next((r for r in await self.records() if r["id"] == ident), None)
        if record is None or not self.visible(record):
            raise NotFound(f"deployment {ident} does not exist")
        return record

    async def idle(self, record: dict[str, Any]) -> None:
        if record["status"] in ("pending", "updating"):
            raise Conflict(
                f"deployment {record['id']} is being changed (workflow {record['workflow_id']}): "
                "wait for it to end"
            )
        if record["status"] == "failed" and record.get("state") == "pending":
            raise Conflict(f"deployment {record['id']} failed to deploy: delete it and retry")
        # One whose record its workflow has not written yet (a restart by the health
        # monitor, a change just submitted by another process).
        for workflow in await self.workflows(ACTIVE):
            if (workflow["spec"] or {}).get("deployment_id") == record["id"]:
                raise Conflict(
                    f"deployment {record['id']} is being changed (workflow {workflow['id']}, "
                    f"{(workflow['spec'] or {}).get('operation')}): wait for it to end"
                )

    # -- the engine ---------------------------------------------------------------------

    async def read(self, kind: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        declared = self.catalog.lookup(self.instance, kind, operation)
        try:
            return await self.orchestrator.read(declared, params)
        except ProviderFailed as exc:
            raise engine_error(exc.__cause__, exc) from exc

    async def replicas(self, ident: str, probe: bool = True) -> list[dict[str, Any]]:
        result = await self.read("replica", "list", {"deployment": ident, "probe": probe})
        replicas: list[dict[str, Any]] = result["replicas"]
        return replicas

    async def pull(self, image: str, auth: RegistryAuth | None) -> None:
        credentials = None if auth is None else msgspec.to_builtins(auth)
        try:
            await self.provider.pull(image, credentials)
        except EngineRefused as exc:
            raise InvalidInput(f"image: {exc.message}") from None
        except (EngineUnavailable, EngineFailed) as exc:
            raise engine_error(exc, exc) from None

    async def admissible(self, app_name: str) -> None:
        """409 when the caller already deployed `app_name`; 409 `QUOTA_EXCEEDED` when a
        user who is not an administrator already has the instance's `quota_per_user`
        deployments (failed creates count for neither)."""
        mine = [
            r
            for r in await self.records()
            if r.get("owner") == self.user and r["status"] != "failed"
        ]
        for other in mine:
            if other["app_name"] == app_name:
                raise Conflict(f"app_name: {app_name} is already deployed ({other['id']})")
        quota = int(getattr(self.provider, "quota_per_user", 0) or 0)
        if quota and not self.admin and len(mine) >= quota:
            raise QuotaExceeded(
                f"quota exceeded: you have {len(mine)} deployments, at most {quota} per user "
                f"(providers.{self.instance}.quota_per_user)",
                {"deployments": len(mine), "quota": quota},
            )

    async def domain_free(self, ident: str, domain: str) -> None:
        """409 when another deployment (anyone's) holds `domain`, or this one already."""
        rows = await list_resources(self.orchestrator.engine, self.instance, "deployment")
        for row in rows:
            held = {str(d.get("domain", "")).lower() for d in row["data"].get("domains") or []}
            if domain in held:
                whose = "this deployment" if row["name"] == ident else "another deployment"
                raise Conflict(f"domain: {domain} is already mapped to {whose}")

    async def settled(self, workflow_id: str) -> dict[str, Any]:
        """Wait (up to `server.wait_timeout`) for a short workflow; its row."""
        await self.orchestrator.wait(workflow_id, self.orchestrator.settings.server.wait_timeout)
        workflow = await get_workflow(self.orchestrator.engine, workflow_id)
        return workflow or {"id": workflow_id, "status": "Pending"}

    def check(self, operation: str, params: dict[str, Any]) -> None:
        try:
            self.provider.validate("deployment", operation, params)
        except InvalidParams as exc:
            raise InvalidInput(f"{exc.path}: {exc.message}" if exc.path else exc.message) from None

    # -- workflows ----------------------------------------------------------------------

    def known_url(self, record: dict[str, Any]) -> str | None:
        """The url without the engine: a custom domain's, or the configured suffix's
        (what `deployment_status_changed` events carry)."""
        suffix = str(getattr(self.provider, "domain_suffix", "") or "")
        return url_of(record, [], suffix)

    async def submit(self, ident: str, operation: str, tasks: list[TaskSpec], **extra: Any) -> str:
        spec = deployment_events.deployment_workflow(ident, operation, tasks, **extra)
        TaskLimits.of(self.orchestrator.settings.server).check_workflow(len(spec.tasks))
        security: Security = self.request.app.state.security
        await security.authorize_items(self.request.scope, self.catalog.items(spec))
        return await self.orchestrator.submit(spec, owner=self.user)

    def task(
        self, name: str, kind: str, operation: str, params: dict[str, Any], after: list[str]
    ) -> TaskSpec:
        task = self.catalog.task(
            self.instance, kind, operation, name=name, params=params, origin="body"
        )
        task.dependencies = list(after)
        return task

    def replica(self, record: dict[str, Any], after: list[str]) -> TaskSpec:
        name = f"{record['app_name']}-{secrets.token_hex(4)}"
        params = {
            "name": name,
            "deployment": record["id"],
            "image": record["image"],
            "port": record["port"],
            "env_vars": record.get("env_vars") or {},
            "health_check": record.get("health_check"),
            "resources": record.get("resources"),
        }
        return self.task(f"replica {name}", "replica", "create", params, after)


def engine_error(cause: BaseException | None, fallback: Exception) -> DomainError:
    if isinstance(cause, EngineUnavailable):
        return NoRuntime(str(cause))
    if isinstance(cause, EngineFailed):
        return DockerError(cause.message, {"status": cause.status})
    return ProviderFailed(str(fallback))


def watched(
    deployments: Deployments, record: dict[str, Any], replicas: list[dict[str, Any]]
) -> None:
    """Each replica's `ready` (its check passes now and the health monitor saw no failure
    since its last pass), `available` (running, not condemned to a restart),
    `health_failures` (the monitor's count in a row) and `restarts` (the monitor's,
    recorded, and the engine's own)."""
    monitor: HealthMonitor | None = deployments.request.app.state.get("health_monitor")
    seen = monitor.view(deployments.instance, record["id"]) if monitor is not None else {}
    threshold = health_of(record).failure_threshold
    restarted = record.get("restarts") or {}
    for replica in replicas:
        known = seen.get(replica["name"])
        failures = known.failures if known and known.incarnation == incarnation(replica) else 0
        replica["health_failures"] = failures
        replica["ready"] = bool(replica.get("healthy")) and failures == 0
        replica["available"] = bool(replica.get("running")) and failures < threshold
        replica["restarts"] = int(replica.get("restart_count") or 0) + int(
            restarted.get(replica["name"]) or 0
        )


def summary(record: dict[str, Any], url: str | None) -> dict[str, Any]:
    return {
        "id": record["id"],
        "app_name": record.get("app_name"),
        "image": record.get("image"),
        "status": record["status"],
        "url": url,
        "replicas": record.get("replicas"),
        "created_at": record.get("created_at"),
        "updated_at": record.get("updated_at"),
    }


def detail(record: dict[str, Any], urls: list[str]) -> dict[str, Any]:
    return {
        **summary(record, next(iter(urls), None)),
        "urls": urls,
        "domains": record.get("domains") or [],
        "user_id": record.get("owner"),
        "port": record.get("port"),
        "env_vars": record.get("env_vars") or {},
        "resources": record.get("resources"),
        "health_check": record.get("health_check"),
        "deployed_at": record.get("deployed_at"),
        "error_message": record.get("error_message"),
        "workflow_id": record.get("workflow_id"),
    }


def _ok(data: Any, status: int = HTTP_200_OK) -> Response[Envelope[Any]]:
    return Response(Envelope(data), status_code=status)


class DeploymentController(Controller):
    path = "/deployments"
    tags = ["deployments"]

    def _open(self, state: State, request: Request[Any, Any, Any]) -> Deployments:
        return Deployments(orchestrator_of(state), request)

    def _suffix(self, deployments: Deployments) -> str:
        return str(getattr(deployments.provider, "domain_suffix", "") or "")

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Deploy an app (seed 002)",
        responses=ENGINE_ERRORS,
    )
    async def create(
        self, state: State, request: Request[Any, Any, Any], data: DeploymentIn
    ) -> Response[Envelope[dict[str, Any]]]:
        deployments = self._open(state, request)
        ident = new_id()
        record = {
            "id": ident,
            "owner": deployments.user,
            **msgspec.to_builtins(data),
        }
        record.pop("registry_auth", None)
        deployments.check("create", record)
        await deployments.admissible(data.app_name)  # before a pull that may be long
        await deployments.pull(data.image, data.registry_auth)
        async with deployments.provider.deciding:
            await deployments.admissible(data.app_name)
            first = deployments.task("record", "deployment", "create", record, [])
            tasks = [first] + [
                deployments.replica(record, ["record"]) for _ in range(data.replicas)
            ]
            workflow_id = await deployments.submit(
                ident,
                "create",
                tasks,
                app_name=data.app_name,
                owner=deployments.user,
                record=record,
                url=deployments.known_url(record),
            )
        return _ok(
            {
                "id": ident,
                "app_name": data.app_name,
                "image": data.image,
                "status": "pending",
                "url": None,
                "created_at": _now(),
                "message": "Deployment is being processed",
                "workflow_id": workflow_id,
            },
            HTTP_201_CREATED,
        )

    @get(
        "/",
        summary="The caller's deployments (every one for administrators)",
        responses=ENGINE_ERRORS,
    )
    async def index(
        self,
        state: State,
        request: Request[Any, Any, Any],
        page: Annotated[int, Parameter(ge=1, le=2**31)] = 1,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 10,
        status: Annotated[
            str | None, Parameter(pattern="^(pending|running|stopped|failed|updating)$")
        ] = None,
    ) -> Envelope[dict[str, Any]]:
        deployments = self._open(state, request)
        records = await deployments.records()
        if status is not None:
            records = [r for r in records if r["status"] == status]
        total = len(records)
        chosen = records[(page - 1) * limit : page * limit]
        suffix = self._suffix(deployments)
        out = []
        for record in chosen:
            named = suffix or record.get("domains")
            replicas = [] if named else await deployments.replicas(record["id"], probe=False)
            out.append(summary(record, url_of(record, replicas, suffix)))
        return Envelope(
            {
                "deployments": out,
                "pagination": {
                    "page": page,
                    "limit": limit,
                    "total": total,
                    "total_pages": (total + limit - 1) // limit,
                },
            }
        )

    @get("/{deployment_id:str}", summary="A deployment", responses=ENGINE_ERRORS)
    async def show(
        self, state: State, request: Request[Any, Any, Any], deployment_id: str
    ) -> Envelope[dict[str, Any]]:
        deployments = self._open(state, request)
        record = await deployments.get(deployment_id)
        replicas = await deployments.replicas(deployment_id, probe=False)
        return Envelope(detail(record, urls_of(record, replicas, self._suffix(deployments))))

    @get(
        "/{deployment_id:str}/status",
        summary="Replicas desired, ready and available",
        responses=ENGINE_ERRORS,
    )
    async def status(
        self, state: State, request: Request[Any, Any, Any], deployment_id: str
    ) -> Envelope[dict[str, Any]]:
        deployments = self._open(state, request)
        record = await deployments.get(deployment_id)
        replicas = await deployments.replicas(deployment_id, probe=True)
        desired = int(record.get("replicas") or 0) if record.get("state") == "running" else 0
        watched(deployments, record, replicas)
        ready = sum(1 for r in replicas if r["ready"])
        available = sum(1 for r in replicas if r["available"])
        health = "healthy" if ready >= desired else ("degraded" if ready else "unhealthy")
        started = sorted(str(r["started_at"]) for r in replicas if r.get("running"))
        uptime = 0
        if started:
            try:
                first = datetime.fromisoformat(started[0].replace("Z", "+00:00")[:32])
                uptime = max(0, int((datetime.now(UTC) - first).total_seconds()))
            except ValueError:
                uptime = 0
        return Envelope(
            {
                "status": record["status"],
                "health": health,
                "replicas": {"desired": desired, "ready": ready, "available": available},
                "last_health_check": replicas[0].get("last_health_check") if replicas else None,
                "uptime": f"{uptime}s",
                "restart_count": sum(r["restarts"] for r in replicas),
                "instances": replicas,
            }
        )

    @patch("/{deployment_id:str}/scale", summary="Add or remove replicas", responses=ENGINE_ERRORS)
    async def scale(
        self, state: State, request: Request[Any, Any, Any], deployment_id: str, data: ScaleIn
    ) -> Envelope[dict[str, Any]]:
        deployments = self._open(state, request)
        record = await deployments.get(deployment_id)
        await deployments.idle(record)
        deployments.check("update", {"id": deployment_id, "replicas": data.replicas})
        live = await deployments.replicas(deployment_id, probe=False)
        tasks = [
            deployments.task(
                "record",
                "deployment",
                "update",
                {"id": deployment_id, "replicas": data.replicas},
                [],
            )
        ]
        if data.replicas > len(live):
            tasks += [
                deployments.replica(record, ["record"]) for _ in range(data.replicas - len(live))
            ]
        else:
            for replica in live[data.replicas :]:
                tasks.append(
                    deployments.task(
                        f"remove {replica['name']}",
                        "replica",
                        "delete",
                        {"name": replica["name"]},
                        ["record"],
                    )
                )
        workflow_id = await deployments.submit(
            deployment_id,
            "scale",
            tasks,
            app_name=record["app_name"],
            replicas=data.replicas,
            url=deployments.known_url(record),
        )
        return Envelope(
            {
                "id": deployment_id,
                "replicas": data.replicas,
                "status": "updating",
                "message": "Deployment is being scaled",
                "workflow_id": workflow_id,
            }
        )

    @put(
        "/{deployment_id:str}",
        summary="Update: a rolling replacement of the replicas",
        responses=ENGINE_ERRORS,
    )
    async def update(
        self,
        state: State,
        request: Request[Any, Any, Any],
        deployment_id: str,
        data: DeploymentUpdateIn,
    ) -> Envelope[dict[str, Any]]:
        deployments = self._open(state, request)
        record = await deployments.get(deployment_id)
        await deployments.idle(record)
        changes = {
            k: v
            for k, v in msgspec.to_builtins(data).items()
            if v is not None and k != "registry_auth"
        }
        deployments.check("update", {"id": deployment_id, **changes})
        if data.image is not None:
            await deployments.pull(data.image, data.registry_auth)
        new = {**record, **changes}
        live = await deployments.replicas(deployment_id, probe=False)
        tasks = [
            deployments.task("record", "deployment", "update", {"id": deployment_id, **changes}, [])
        ]
        # One replica at a time: the new one healthy, then an old one removed.
        previous = "record"
        target = int(new.get("replicas") or 0)
        for index in range(max(target, len(live))):
            if index < target:
                created = deployments.replica(new, [previous])
                tasks.append(created)
                previous = created.name
            if index < len(live):
                name = live[index]["name"]
                removed = deployments.task(
                    f"remove {name}", "replica", "delete", {"name": name}, [previous]
                )
                tasks.append(removed)
                previous = removed.name
        workflow_id = await deployments.submit(
            deployment_id,
            "update",
            tasks,
            app_name=record["app_name"],
            changes=changes,
            url=deployments.known_url(new),
        )
        return Envelope(
            {
                "id": deployment_id,
                "status": "updating",
                "message": "Deployment update in progress",
                "updated_at": _now(),
                "workflow_id": workflow_id,
            }
        )

    async def _each(
        self, state: State, request: Request[Any, Any, Any], deployment_id: str, operation: str
    ) -> tuple[dict[str, Any], str]:
        deployments = self._open(state, request)
        record = await deployments.get(deployment_id)
        if operation != "delete" or record.get("state") != "pending":
            await deployments.idle(record)
        live = await deployments.replicas(deployment_id, probe=False)
        target = {"stop": "stopped", "start": "running", "delete": "deleting"}[operation]
        tasks: list[TaskSpec] = []
        recorded = record.get("state") != "pending"
        if recorded:
            tasks.append(
                deployments.task(
                    "record", "deployment", "update", {"id": deployment_id, "state": target}, []
                )
            )
        after = ["record"] if recorded else []
        chosen = [
            r
            for r in live
            if operation == "delete"
            or (operation == "stop" and r["running"])
            or (operation == "start" and not r["running"])
        ]
        for replica in chosen:
            tasks.append(
                deployments.task(
                    f"{operation} {replica['name']}",
                    "replica",
                    operation,
                    {"name": replica["name"]},
                    after,
                )
            )
        if operation == "delete" and recorded:
            tasks.append(
                deployments.task(
                    "forget",
                    "deployment",
                    "delete",
                    {"id": deployment_id},
                    [t.name for t in tasks],
                )
            )
        if not tasks:
            return record, ""
        workflow_id = await deployments.submit(
            deployment_id,
            operation,
            tasks,
            app_name=record["app_name"],
            url=deployments.known_url(record),
        )
        return record, workflow_id

    @post(
        "/{deployment_id:str}/stop",
        status_code=HTTP_200_OK,
        summary="Stop every replica",
        responses=ENGINE_ERRORS,
    )
    async def stop(
        self, state: State, request: Request[Any, Any, Any], deployment_id: str
    ) -> Envelope[dict[str, Any]]:
        _, workflow_id = await self._each(state, request, deployment_id, "stop")
        return Envelope(
            {
                "id": deployment_id,
                "status": "stopped",
                "message": "Deployment is being stopped",
                "workflow_id": workflow_id,
            }
        )

    @post(
        "/{deployment_id:str}/start",
        status_code=HTTP_200_OK,
        summary="Start every replica",
        responses=ENGINE_ERRORS,
    )
    async def start(
        self, state: State, request: Request[Any, Any, Any], deployment_id: str
    ) -> Envelope[dict[str, Any]]:
        record, workflow_id = await self._each(state, request, deployment_id, "start")
        return Envelope(
            {
                "id": deployment_id,
                "status": "running",
                "replicas": record.get("replicas"),
                "message": "Deployment is being started",
                "workflow_id": workflow_id,
            }
        )

    @delete(
        "/{deployment_id:str}",
        status_code=HTTP_200_OK,
        summary="Delete a deployment",
        responses=ENGINE_ERRORS,
    )
    async def remove(
        self, state: State, request: Request[Any, Any, Any], deployment_id: str
    ) -> Envelope[dict[str, Any]]:
        record, workflow_id = await self._each(state, request, deployment_id, "delete")
        return Envelope(
            {
                "message": "Deployment is being deleted",
                "deployment_id": deployment_id,
                "app_name": record.get("app_name"),
                "namespace_deleted": True,
                "workflow_id": workflow_id,
            }
        )

    # -- domains ------------------------------------------------------------------------

    @get(
        "/{deployment_id:str}/domains",
        summary="The deployment's custom domains",
        responses=ENGINE_ERRORS,
    )
    async def domains(
        self, state: State, request: Request[Any, Any, Any], deployment_id: str
    ) -> Envelope[dict[str, Any]]:
        record = await self._open(state, request).get(deployment_id)
        return Envelope({"domains": record.get("domains") or []})

    @post(
        "/{deployment_id:str}/domains",
        status_code=HTTP_201_CREATED,
        summary="Map a custom domain (unique across deployments)",
        responses=ENGINE_ERRORS,
    )
    async def add_domain(
        self, state: State, request: Request[Any, Any, Any], deployment_id: str, data: DomainIn
    ) -> Response[Envelope[dict[str, Any]]]:
        deployments = self._open(state, request)
        domain = data.domain.lower()
        entry = {"id": new_id(), "domain": domain, "created_at": _now()}
        async with deployments.provider.deciding:
            record = await deployments.get(deployment_id)
            await deployments.idle(record)
            await deployments.domain_free(deployment_id, domain)
            held = list(record.get("domains") or [])
            workflow = await self._domains(deployments, record, [*held, entry], f"add {domain}")
        return _ok({**entry, "deployment_id": deployment_id, "workflow_id": workflow}, 201)

    @delete(
        "/{deployment_id:str}/domains/{domain_id:str}",
        status_code=HTTP_200_OK,
        summary="Remove a custom domain (by its id or its name)",
        responses=ENGINE_ERRORS,
    )
    async def remove_domain(
        self, state: State, request: Request[Any, Any, Any], deployment_id: str, domain_id: str
    ) -> Envelope[dict[str, Any]]:
        deployments = self._open(state, request)
        async with deployments.provider.deciding:
            record = await deployments.get(deployment_id)
            held = list(record.get("domains") or [])
            kept = [d for d in held if domain_id not in (d["id"], d["domain"])]
            if len(kept) == len(held):
                raise NotFound(f"deployment {deployment_id} has no domain {domain_id}")
            await deployments.idle(record)
            gone = next(d for d in held if d not in kept)
            workflow = await self._domains(deployments, record, kept, f"remove {gone['domain']}")
        return Envelope(
            {
                "message": "Domain removed",
                "id": gone["id"],
                "domain": gone["domain"],
                "deployment_id": deployment_id,
                "workflow_id": workflow,
            }
        )

    async def _domains(
        self,
        deployments: Deployments,
        record: dict[str, Any],
        domains: list[dict[str, Any]],
        what: str,
    ) -> str:
        """Record the deployment's new list of domains (a workflow, waited for)."""
        params = {"id": record["id"], "domains": domains}
        deployments.check("update", params)
        task = deployments.task("record", "deployment", "update", params, [])
        workflow_id = await deployments.submit(
            record["id"],
            "domains",
            [task],
            app_name=record["app_name"],
            change=what,
            url=deployments.known_url({**record, "domains": domains}),
            state=record.get("state"),
        )
        workflow = await deployments.settled(workflow_id)
        if workflow["status"] in FAILED:
            raise Conflict(
                workflow.get("error") or f"domains: {what} failed", {"workflow_id": workflow_id}
            )
        return workflow_id

    # -- metrics --------------------------------------------------------------------------

    @get(
        "/{deployment_id:str}/metrics",
        summary="CPU, memory, network and restarts per replica, from the engine",
        responses=ENGINE_ERRORS,
    )
    async def metrics(
        self, state: State, request: Request[Any, Any, Any], deployment_id: str
    ) -> Envelope[dict[str, Any]]:
        deployments = self._open(state, request)
        record = await deployments.get(deployment_id)
        sampled = await deployments.read("replica", "stats", {"deployment": deployment_id})
        restarted = record.get("restarts") or {}
        replicas = [
            {
                "name": r["name"],
                "container_id": r["container_id"],
                "running": r["running"],
                "cpu_percent": r["cpu_percent"],
                "cpu_seconds": r["cpu_seconds"],
                "memory_bytes": r["memory_bytes"],
                "memory_limit_bytes": r["memory_limit_bytes"],
                "memory_percent": r["memory_percent"],
                "network": r["network"],
                "restarts": r["restart_count"] + int(restarted.get(r["name"]) or 0),
            }
            for r in sampled["replicas"]
        ]
        total = {
            "cpu_percent": round(sum(r["cpu_percent"] for r in replicas), 2),
            "memory_bytes": sum(r["memory_bytes"] for r in replicas),
            "rx_bytes": sum(r["network"]["rx_bytes"] for r in replicas),
            "tx_bytes": sum(r["network"]["tx_bytes"] for r in replicas),
            "restarts": sum(r["restarts"] for r in replicas),
            "replicas": len(replicas),
            "running": sum(1 for r in replicas if r["running"]),
        }
        return Envelope(
            {
                "metrics": {
                    "timestamp": sampled["timestamp"],
                    "interval_seconds": sampled["interval_seconds"],
                    "total": total,
                    "replicas": replicas,
                }
            }
        )

    # -- logs -----------------------------------------------------------------------------

    @get(
        "/{deployment_id:str}/logs",
        summary="The replicas' last log lines; with follow, a stream of them (NDJSON)",
        responses=ENGINE_ERRORS,
    )
    async def logs(
        self,
        state: State,
        request: Request[Any, Any, Any],
        deployment_id: str,
        tail: Annotated[int, Parameter(ge=1, le=10_000)] = 100,
        follow: bool = False,
    ) -> Response[Any]:
        deployments = self._open(state, request)
        await deployments.get(deployment_id)
        if follow:
            lines = deployments.provider.follow_logs(deployment_id, tail)

            async def ndjson() -> AsyncIterator[bytes]:
                try:
                    async for entry in lines:
                        yield msgspec.json.encode(entry) + b"\n"
                finally:
                    await lines.aclose()

            return Stream(ndjson(), media_type="application/x-ndjson")
        entries: list[dict[str, Any]] = []
        for replica in await deployments.replicas(deployment_id, probe=False):
            try:
                result = await deployments.read(
                    "container", "logs", {"name": replica["name"], "tail": tail}
                )
            except NotFound:
                continue  # removed since it was listed (a replica just replaced)
            for line in result["lines"]:
                stamp, _, message = str(line).partition(" ")
                entries.append(log_entry(stamp, message, replica["name"]))
        entries.sort(key=lambda entry: str(entry["timestamp"]))
        return _ok({"logs": entries[-tail:]})

    @websocket_route("/{deployment_id:str}/logs/stream")
    async def log_stream(self, socket: WebSocket[Any, Any, Any], deployment_id: str) -> None:
        """Every replica's log lines as `{"type": "log", "data": entry}` (the last `tail`,
        10 by default, then each new one) until the socket closes; authenticated by a
        bearer header, `?token=` or a first `{"type": "auth"}` message."""
        await socket.accept()
        route = ("GET", "/deployments/{deployment_id}/logs/stream")
        credential = await socket_credential(socket, "read", route)
        if credential is None:
            return
        principal = credential.principal
        orchestrator = orchestrator_of(socket.app.state)
        streams = orchestrator.events.streams
        limit = orchestrator.settings.server.ws_connections_per_user
        try:
            tail = int(socket.query_params.get("tail", 10))
            if not 1 <= tail <= 10_000:
                raise ValueError
            deployments = Deployments(orchestrator, socket)
            await deployments.get(deployment_id)
        except ValueError:
            await refuse(socket, "INVALID_INPUT", "tail: an integer from 1 to 10000")
            return
        except DomainError as exc:
            await refuse(socket, exc.code, exc.message)
            return
        if streams[principal.user_id] >= limit:
            await refuse(socket, "RATE_LIMITED", f"at most {limit} streams per user")
            return
        streams[principal.user_id] += 1
        lines = deployments.provider.follow_logs(deployment_id, tail)

        async def stream() -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(cancel_when_closed, socket, group.cancel_scope)
                try:
                    async for entry in lines:
                        await socket.send_bytes(msgspec.json.encode({"type": "log", "data": entry}))
                except (EngineUnavailable, EngineFailed) as exc:
                    await refuse(socket, engine_error(exc, exc).code, str(exc))
                group.cancel_scope.cancel()

        try:
            await while_allowed(socket, credential, "read", stream)
        except WebSocketDisconnect:
            pass
        finally:
            await lines.aclose()
            streams[principal.user_id] -= 1


NOTIFICATIONS_ROUTE = ("GET", "/v1/ws/notifications")


@websocket_route("/ws/notifications")
async def notifications(socket: WebSocket[Any, Any, Any]) -> None:
    """Seed 002's notifications: each `deployment_status_changed` of the caller's
    deployments (every one for an administrator), as a text message in the seed's shape
    with the log's `seq`, from now on (or after `?since=`). Authenticated by a bearer
    header, `?token=` or a first `{"type": "auth"}` message."""
    await socket.accept()
    credential = await socket_credential(socket, "list", NOTIFICATIONS_ROUTE)
    if credential is None:
        return
    principal = credential.principal
    orchestrator = orchestrator_of(socket.app.state)
    streams = orchestrator.events.streams
    limit = orchestrator.settings.server.ws_connections_per_user
    if streams[principal.user_id] >= limit:
        await refuse(socket, "RATE_LIMITED", f"at most {limit} streams per user")
        return
    try:
        since = socket.query_params.get("since")
        after = int(since) if since is not None else await orchestrator.records.last_seq()
    except ValueError:
        await refuse(socket, "INVALID_INPUT", "since: must be an event seq (an integer)")
        return
    streams[principal.user_id] += 1

    async def stream() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_when_closed, socket, group.cancel_scope)
            await _notify(socket, orchestrator, principal, after)
            group.cancel_scope.cancel()

    try:
        await while_allowed(socket, credential, "list", stream)
    except WebSocketDisconnect:
        pass
    finally:
        streams[principal.user_id] -= 1


async def _notify(
    socket: WebSocket[Any, Any, Any], orchestrator: Orchestrator, principal: Principal, after: int
) -> None:
    bus = orchestrator.events
    admin = "admin" in principal.roles
    patience = orchestrator.settings.server.ws_send_timeout
    while True:
        version = bus.version
        events = await orchestrator.records.events(after, types=[deployment_events.SOURCE])
        for event in events:
            after = event.seq
            if not deployment_events.is_source(event.type, event.data):
                continue
            found = await deployment_events.deployment_event(
                orchestrator.engine, event.data, event.at
            )
            if found is None or not (admin or found["user_id"] == principal.user_id):
                continue
            try:
                with anyio.fail_after(patience):
                    await socket.send_text(
                        msgspec.json.encode({**found, "seq": event.seq}).decode()
                    )
            except TimeoutError:
                await refuse(
                    socket,
                    "SLOW_CONSUMER",
                    f"the client did not keep up; reconnect with since={after} to resume",
                )
                return
        if not events:
            await bus.wait_for_change(version)
