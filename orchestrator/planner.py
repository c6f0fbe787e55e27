"""Turning requests into workflows: a DAG of task specs, before anything is stored.

Server creation is one task per server; a taskserv is installed on each of its servers
after that server (and after the taskservs it depends on, on the same server); a
cluster comes after the taskservs it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InvalidInput, NotFound
from orchestrator.settings import ServerSettings
from orchestrator.specs import TaskSpec
from orchestrator.workspace import ClusterDef, InfraSettings, ServerDef, TaskservDef

#: instance name -> provider type (`sim`, `local`, …)
InstanceTypes = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """How many tasks one submission may create (`server.max_tasks_per_*`)."""

    per_operation: int
    per_workflow: int

    @classmethod
    def of(cls, server: ServerSettings) -> TaskLimits:
        return cls(server.max_tasks_per_operation, server.max_tasks_per_workflow)

    def check_workflow(self, count: int) -> None:
        if count > self.per_workflow:
            raise InvalidInput(
                f"the workflow would have {count} tasks; at most {self.per_workflow} "
                "(server.max_tasks_per_workflow)"
            )

    def check_operation(self, where: str, count: int) -> None:
        if count > self.per_operation:
            raise InvalidInput(
                f"{where}: the operation would expand into {count} tasks; at most "
                f"{self.per_operation} (server.max_tasks_per_operation)"
            )


def _provider_task(
    types: InstanceTypes, instance: str, action: str, subject: str, params: dict[str, Any]
) -> TaskSpec:
    if instance not in types:
        raise InvalidInput(
            f"provider '{instance}' (for {subject}) is not a configured provider instance "
            f"(configured: {', '.join(sorted(types))})"
        )
    if types[instance] == "local":
        if "command" not in params:
            raise InvalidInput(f"{subject}: a `local` provider needs params.command")
        return TaskSpec(
            name=subject,
            provider=instance,
            action="run",
            params=params,
            command=str(params["command"]),
            args=[str(a) for a in params.get("args", [])],
        )
    return TaskSpec(
        name=subject,
        provider=instance,
        action=action,
        params=params,
        command=f"{instance} {action}",
        args=[str(params.get("name", subject))],
    )


def _server_task(types: InstanceTypes, server: ServerDef) -> TaskSpec:
    params: dict[str, Any] = {"name": server.name, **server.params}
    if server.plan is not None:
        params["plan"] = server.plan
    if server.zone is not None:
        params["zone"] = server.zone
    return _provider_task(types, server.provider, "server.create", f"server {server.name}", params)


def _servers_by_name(infra: InfraSettings) -> dict[str, ServerDef]:
    return {s.name: s for s in infra.servers}


def _taskserv_closure(infra: InfraSettings, names: list[str]) -> list[TaskservDef]:
    """The named taskservs and everything they depend on, dependencies first."""
    defs = {t.name: t for t in infra.taskservs}
    ordered: list[TaskservDef] = []
    seen: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name in trail:
            # The graph validation reports the cycle with every name in it.
            return
        if name not in defs:
            raise NotFound(
                f"taskserv '{name}' is not defined in the infra "
                f"(defined: {', '.join(sorted(defs)) or 'none'})"
            )
        for dep in defs[name].dependencies:
            visit(dep, (*trail, name))
        seen.add(name)
        ordered.append(defs[name])

    for name in names:
        visit(name, ())
    return ordered


def _taskserv_tasks(
    types: InstanceTypes, infra: InfraSettings, taskservs: list[TaskservDef]
) -> list[TaskSpec]:
    servers = _servers_by_name(infra)
    wanted = {t.name for t in taskservs}
    tasks: dict[str, TaskSpec] = {}
    for taskserv in taskservs:
        targets = taskserv.servers or list(servers)
        for server_name in targets:
            if server_name not in servers:
                raise InvalidInput(
                    f"taskserv '{taskserv.name}' names server '{server_name}', which the infra "
                    "does not define"
                )
            server = servers[server_name]
            server_task = f"server {server_name}"
            if server_task not in tasks:
                tasks[server_task] = _server_task(types, server)
            params = {"name": taskserv.name, "server": server_name, **taskserv.params}
            task = _provider_task(
                types,
                server.provider,
                "taskserv.create",
                f"taskserv {taskserv.name} on {server_name}",
                params,
            )
            task.dependencies = [server_task] + [
                f"taskserv {dep} on {server_name}" for dep in taskserv.dependencies if dep in wanted
            ]
            tasks[task.name] = task
    return list(tasks.values())


def plan_servers(types: InstanceTypes, infra: InfraSettings) -> list[TaskSpec]:
    if not infra.servers:
        raise InvalidInput("the infra defines no servers")
    return [_server_task(types, server) for server in infra.servers]


def plan_taskserv(
    types: InstanceTypes, infra: InfraSettings, operation: str, taskserv: str
) -> list[TaskSpec]:
    if operation == "create":
        return _taskserv_tasks(types, infra, _taskserv_closure(infra, [taskserv]))
    (definition,) = _taskserv_closure(infra, [taskserv])[-1:]
    servers = _servers_by_name(infra)
    return [
        _provider_task(
            types,
            servers[name].provider,
            "taskserv.delete",
            f"remove taskserv {taskserv} from {name}",
            {"name": taskserv, "server": name},
        )
        for name in (definition.servers or list(servers))
    ]


def _find_cluster(infra: InfraSettings, cluster_type: str) -> ClusterDef:
    for cluster in infra.clusters:
        if cluster_type in (cluster.cluster_type, cluster.name):
            return cluster
    known = ", ".join(sorted({c.cluster_type for c in infra.clusters})) or "none"
    raise NotFound(f"cluster type '{cluster_type}' is not defined in the infra (defined: {known})")


def plan_cluster(
    types: InstanceTypes, infra: InfraSettings, operation: str, cluster_type: str
) -> list[TaskSpec]:
    cluster = _find_cluster(infra, cluster_type)
    params = {"name": cluster.name, "cluster_type": cluster.cluster_type, **cluster.params}
    if operation == "delete":
        return [
            _provider_task(
                types, cluster.provider, "cluster.delete", f"remove cluster {cluster.name}", params
            )
        ]
    tasks = _taskserv_tasks(types, infra, _taskserv_closure(infra, cluster.taskservs))
    needed = tuple(f"taskserv {name} on " for name in cluster.taskservs)
    top = [t.name for t in tasks if t.name.startswith(needed)]
    cluster_task = _provider_task(
        types, cluster.provider, "cluster.create", f"cluster {cluster.name}", params
    )
    cluster_task.dependencies = top
    return [*tasks, cluster_task]


OPERATIONS = ("create", "delete")


def check_operation(operation: str) -> None:
    if operation not in OPERATIONS:
        raise InvalidInput(f"operation: '{operation}' is not one of {', '.join(OPERATIONS)}")
