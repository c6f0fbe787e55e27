"""Containers and Docker (seed 000) under `/api/v1` (and unprefixed): a thin adapter over
the `containers` provider type's `container` and `image` operations.

Reads ask the engine at once (`container.list`, `read`, `logs`); mutations are one-task
workflows, waited for up to `server.wait_timeout` and answered with their outcome (201/200
with the container, or the engine's refusal as `DOCKER_ERROR`; 202 with the workflow when
it is still running). A running container is not deleted (409, as the seed says).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from orchestrator.api.controllers import orchestrator_of, security_of
from orchestrator.api.deployments import ENGINE_ERRORS, DockerError, NoRuntime, engine_error
from orchestrator.api.security import user_of
from orchestrator.errors import InvalidInput, NotFound, ProviderFailed
from orchestrator.http.envelope import Envelope
from orchestrator.service import Orchestrator
from orchestrator.specs import WorkflowSpec
from orchestrator.store.workflows import get_workflow, list_tasks
from providers.containers._kinds import ContainerName, EnvValue, ImageRef

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")


class DockerConflict(DockerError):
    status_code = 409


class HostBinding(msgspec.Struct, rename="camel"):
    host_port: str = ""
    host_ip: str = ""


class DockerCreateIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """Seed 000's body: `env` as `NAME=value` strings, `portBindings` as Docker has them."""

    name: ContainerName
    image: ImageRef
    env: list[EnvValue] = []
    port_bindings: dict[str, list[HostBinding]] = {}


class PullIn(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    image_name: ImageRef
    tag: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")] = "latest"


class Engine:
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        doing = orchestrator.catalog.doing("container", "list")
        if not doing:
            raise NoRuntime(
                "no container engine is configured: add a provider instance of type "
                "'containers' (docs/deployments.md)"
            )
        self.instance = doing[0]

    async def read(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        catalog = self.orchestrator.catalog
        declared = catalog.lookup(self.instance, "container", operation)
        catalog.check_params(declared, params, "params")
        try:
            return await self.orchestrator.read(declared, params)
        except ProviderFailed as exc:
            raise engine_error(exc.__cause__, exc) from exc

    async def change(
        self,
        request: Request[Any, Any, Any],
        kind: str,
        operation: str,
        params: dict[str, Any],
        created: bool = False,
    ) -> Response[Envelope[Any]]:
        catalog = self.orchestrator.catalog
        name = f"{operation} {kind} {params.get('name') or params.get('image')}"[:200]
        task = catalog.task(self.instance, kind, operation, name=name, params=params, origin="body")
        spec = WorkflowSpec(kind=kind, name=name, tasks=[task], request={"seed": "000"})
        await security_of(request).authorize_items(request.scope, catalog.items(spec))
        workflow_id = await self.orchestrator.submit(spec, owner=user_of(request.scope))
        await self.orchestrator.wait(workflow_id, self.orchestrator.settings.server.wait_timeout)
        workflow = await get_workflow(self.orchestrator.engine, workflow_id)
        status = workflow["status"] if workflow else "Pending"
        headers = {"Location": f"/tasks/{workflow_id}", "X-Workflow-Status": status}
        if status == "Completed":
            tasks, _ = await list_tasks(
                self.orchestrator.engine, status=None, workflow_id=workflow_id, limit=1, offset=0
            )
            result = (tasks[0].get("result") if tasks else None) or {}
            return Response(
                Envelope({**result, "workflow_id": workflow_id}),
                status_code=HTTP_201_CREATED if created else HTTP_200_OK,
                headers=headers,
            )
        if status in ("Failed", "Cancelled", "RolledBack"):
            raise DockerError(
                (workflow or {}).get("error") or f"{operation} {kind} failed",
                {"workflow_id": workflow_id},
            )
        return Response(
            Envelope({"workflow_id": workflow_id, "status": status}),
            status_code=HTTP_202_ACCEPTED,
            headers=headers,
        )


def seed_container(container: dict[str, Any], runtime: str) -> dict[str, Any]:
    state = str(container.get("state", "")).upper()
    return {
        "id": container["id"],
        "name": container["name"],
        "image": container["image"],
        "state": f"CONTAINER_{'RUNNING' if container.get('running') else (state or 'UNKNOWN')}",
        "created_at": container.get("created"),
        "runtime": runtime,
        "ports": container.get("ports", []),
        "labels": container.get("labels", {}),
    }


class ContainerController(Controller):
    path = "/containers"
    tags = ["containers"]

    @get("/", summary="Every container the engine knows (seed 000)", responses=ENGINE_ERRORS)
    async def index(self, state: State) -> Envelope[dict[str, Any]]:
        engine = Engine(orchestrator_of(state))
        result = await engine.read("list", {"all": True})
        containers = [seed_container(c, result["runtime"]) for c in result["containers"]]
        return Envelope(
            {"containers": containers, "count": len(containers), "runtime": result["runtime"]}
        )

    @get(
        "/{container_id:str}",
        summary="One container, as the engine has it",
        responses=ENGINE_ERRORS,
    )
    async def show(self, state: State, container_id: str) -> Envelope[dict[str, Any]]:
        engine = Engine(orchestrator_of(state))
        found = await engine.read("read", {"name": _named(container_id)})
        return Envelope(found)

    @get(
        "/{container_id:str}/logs", summary="A container's last log lines", responses=ENGINE_ERRORS
    )
    async def logs(
        self,
        state: State,
        container_id: str,
        tail: Annotated[int, Parameter(ge=1, le=10_000)] = 100,
    ) -> Envelope[dict[str, Any]]:
        engine = Engine(orchestrator_of(state))
        result = await engine.read("logs", {"name": _named(container_id), "tail": tail})
        return Envelope(
            {
                "container_id": container_id,
                "logs": "".join(f"{line}\n" for line in result["lines"]),
                "runtime": result["runtime"],
            }
        )


class DockerController(Controller):
    path = "/docker"
    tags = ["containers"]

    @get(
        "/ps",
        summary="The engine's containers, as `docker ps -a` lists them",
        responses=ENGINE_ERRORS,
    )
    async def ps(self, state: State) -> Envelope[dict[str, Any]]:
        engine = Engine(orchestrator_of(state))
        result = await engine.read("list", {"all": True})
        return Envelope(
            {
                "containers": [
                    {
                        "id": c["id"][:12],
                        "names": [f"/{c['name']}"],
                        "image": c["image"],
                        "state": c["state"],
                        "status": c["status"],
                        "ports": [
                            f"{p['containerPort']}/{p['protocol']}->{p['hostPort']}/{p['protocol']}"
                            for p in c["ports"]
                        ],
                    }
                    for c in result["containers"]
                ]
            }
        )

    @post(
        "/containers",
        status_code=HTTP_201_CREATED,
        summary="Create a container (a task)",
        responses=ENGINE_ERRORS,
    )
    async def create(
        self, state: State, request: Request[Any, Any, Any], data: DockerCreateIn
    ) -> Response[Envelope[Any]]:
        env: dict[str, str] = {}
        for index, item in enumerate(data.env):
            key, equals, value = item.partition("=")
            if not equals or not key:
                raise InvalidInput(f"env[{index}]: expected NAME=value")
            env[key] = value
        ports = []
        for key, bindings in data.port_bindings.items():
            port, _, protocol = key.partition("/")
            for binding in bindings:
                if not port.isdigit() or not (binding.host_port or "0").isdigit():
                    raise InvalidInput(
                        f"portBindings.{key}: expected '<port>/<protocol>' and a numeric hostPort"
                    )
                ports.append(
                    {
                        "container_port": int(port),
                        "host_port": int(binding.host_port or 0),
                        "protocol": protocol or "tcp",
                    }
                )
        params = {"name": data.name, "image": data.image, "env": env, "ports": ports}
        engine = Engine(orchestrator_of(state))
        orchestrator_of(state).catalog.check_params(
            orchestrator_of(state).catalog.lookup(engine.instance, "container", "create"),
            params,
            "body",
        )
        return await engine.change(request, "container", "create", params, created=True)

    @post(
        "/containers/{container_id:str}/start",
        status_code=HTTP_200_OK,
        summary="Start it",
        responses=ENGINE_ERRORS,
    )
    async def start(
        self, state: State, request: Request[Any, Any, Any], container_id: str
    ) -> Response[Envelope[Any]]:
        engine = Engine(orchestrator_of(state))
        await engine.read("read", {"name": _named(container_id)})  # 404 if missing
        return await engine.change(request, "container", "start", {"name": container_id})

    @post(
        "/containers/{container_id:str}/stop",
        status_code=HTTP_200_OK,
        summary="Stop it",
        responses=ENGINE_ERRORS,
    )
    async def stop(
        self, state: State, request: Request[Any, Any, Any], container_id: str
    ) -> Response[Envelope[Any]]:
        engine = Engine(orchestrator_of(state))
        await engine.read("read", {"name": _named(container_id)})
        return await engine.change(request, "container", "stop", {"name": container_id})

    @delete(
        "/containers/{container_id:str}",
        status_code=HTTP_200_OK,
        summary="Remove it",
        responses=ENGINE_ERRORS,
    )
    async def remove(
        self, state: State, request: Request[Any, Any, Any], container_id: str
    ) -> Response[Envelope[Any]]:
        engine = Engine(orchestrator_of(state))
        found = await engine.read("read", {"name": _named(container_id)})
        if found.get("running"):
            raise DockerConflict(f"container {container_id} is running: stop it first")
        return await engine.change(request, "container", "delete", {"name": container_id})

    @post(
        "/images/pull",
        status_code=HTTP_200_OK,
        summary="Pull an image (a task)",
        responses=ENGINE_ERRORS,
    )
    async def pull(
        self, state: State, request: Request[Any, Any, Any], data: PullIn
    ) -> Response[Envelope[Any]]:
        engine = Engine(orchestrator_of(state))
        tagged = ":" in data.image_name.rsplit("/", 1)[-1]
        image = data.image_name if tagged else f"{data.image_name}:{data.tag}"
        return await engine.change(request, "image", "pull", {"image": image})


def _named(container_id: str) -> str:
    if not _NAME.fullmatch(container_id):
        raise NotFound(f"container {container_id} does not exist")
    return container_id
