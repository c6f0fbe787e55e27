"""Turning an infra's settings into workflows: a DAG of task specs, before anything is
stored (the seed's `/workflows/{servers,taskserv,cluster}/create`).

Server creation is one task per server; a taskserv is installed on each of its servers
after that server (and after the taskservs it depends on, on the same server); a
cluster comes after the taskservs it needs. Each task is `<kind>.<operation>` on the
instance the infra names, as the catalog resolves it (`orchestrator.resources`): an
instance that runs commands does it with the command in the params.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InvalidInput, NotFound
from orchestrator.resources import Catalog
from orchestrator.settings import ServerSettings
from orchestrator.specs import TaskSpec
from orchestrator.workspace import ClusterDef, InfraSettings, ServerDef, TaskservDef


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


def _server_task(catalog: Catalog, index: int, server: ServerDef) -> TaskSpec:
    params: dict[str, Any] = {"name": server.name, **server.params}
    if server.plan is not None:
        params["plan"] = server.plan
    if server.zone is not None:
        params["zone"] = server.zone
    return catalog.task(
        server.provider,
        "server",
        "create",
        name=f"server {server.name}",
        params=params,
        origin=f"servers[{index}]",
    )


def _servers_by_name(infra: InfraSettings) -> dict[str, tuple[int, ServerDef]]:
    return {s.name: (i, s) for i, s in enumerate(infra.servers)}


def _targets(taskserv: TaskservDef, servers: dict[str, tuple[int, ServerDef]]) -> list[str]:
    """The servers a taskserv goes on (every server when it names none), all defined."""
    targets = taskserv.servers or list(servers)
    for name in targets:
        if name not in servers:
            raise InvalidInput(
                f"taskserv '{taskserv.name}' names server '{name}', which the infra "
                f"does not define (defined: {', '.join(sorted(servers)) or 'none'})"
            )
    return targets


def _positions(infra: InfraSettings) -> dict[str, int]:
    """Each taskserv's index in the infra (for messages naming where its params are)."""
    return {t.name: i for i, t in reversed(list(enumerate(infra.taskservs)))}


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
    catalog: Catalog, infra: InfraSettings, taskservs: list[TaskservDef]
) -> list[TaskSpec]:
    servers = _servers_by_name(infra)
    positions = _positions(infra)
    wanted = {t.name for t in taskservs}
    tasks: dict[str, TaskSpec] = {}
    for taskserv in taskservs:
        for server_name in _targets(taskserv, servers):
            index, server = servers[server_name]
            server_task = f"server {server_name}"
            if server_task not in tasks:
                tasks[server_task] = _server_task(catalog, index, server)
            params = {"name": taskserv.name, "server": server_name, **taskserv.params}
            task = catalog.task(
                server.provider,
                "taskserv",
                "create",
                name=f"taskserv {taskserv.name} on {server_name}",
                params=params,
                origin=f"taskservs[{positions[taskserv.name]}]",
            )
            task.dependencies = [server_task] + [
                f"taskserv {dep} on {server_name}" for dep in taskserv.dependencies if dep in wanted
            ]
            tasks[task.name] = task
    return list(tasks.values())


def plan_servers(catalog: Catalog, infra: InfraSettings) -> list[TaskSpec]:
    if not infra.servers:
        raise InvalidInput("the infra defines no servers")
    return [_server_task(catalog, i, server) for i, server in enumerate(infra.servers)]


def plan_taskserv(
    catalog: Catalog, infra: InfraSettings, operation: str, taskserv: str
) -> list[TaskSpec]:
    if operation == "create":
        return _taskserv_tasks(catalog, infra, _taskserv_closure(infra, [taskserv]))
    (definition,) = _taskserv_closure(infra, [taskserv])[-1:]
    servers = _servers_by_name(infra)
    return [
        catalog.task(
            servers[name][1].provider,
            "taskserv",
            "delete",
            name=f"remove taskserv {taskserv} from {name}",
            params={"name": taskserv, "server": name},
            origin=f"taskservs[{_positions(infra)[taskserv]}]",
        )
        for name in _targets(definition, servers)
    ]


def _find_cluster(infra: InfraSettings, cluster_type: str) -> ClusterDef:
    for cluster in infra.clusters:
        if cluster_type in (cluster.cluster_type, cluster.name):
            return cluster
    known = ", ".join(sorted({c.cluster_type for c in infra.clusters})) or "none"
    raise NotFound(f"cluster type '{cluster_type}' is not defined in the infra (defined: {known})")


def plan_cluster(
    catalog: Catalog, infra: InfraSettings, operation: str, cluster_type: str
) -> list[TaskSpec]:
    cluster = _find_cluster(infra, cluster_type)
    params = {"name": cluster.name, "cluster_type": cluster.cluster_type, **cluster.params}
    origin = f"clusters[{infra.clusters.index(cluster)}]"
    if operation == "delete":
        return [
            catalog.task(
                cluster.provider,
                "cluster",
                "delete",
                name=f"remove cluster {cluster.name}",
                params=params,
                origin=origin,
            )
        ]
    tasks = _taskserv_tasks(catalog, infra, _taskserv_closure(infra, cluster.taskservs))
    needed = tuple(f"taskserv {name} on " for name in cluster.taskservs)
    top = [t.name for t in tasks if t.name.startswith(needed)]
    cluster_task = catalog.task(
        cluster.provider,
        "cluster",
        "create",
        name=f"cluster {cluster.name}",
        params=params,
        origin=origin,
    )
    cluster_task.dependencies = top
    return [*tasks, cluster_task]


OPERATIONS = ("create", "delete")


def check_operation(operation: str) -> None:
    if operation not in OPERATIONS:
        raise InvalidInput(f"operation: '{operation}' is not one of {', '.join(OPERATIONS)}")


def infra_items(catalog: Catalog, infra: InfraSettings) -> list[tuple[str, str, str]]:
    """What the infra declares, as the inventory names it: (instance, kind, name) of each
    server, each taskserv on each of its servers, and each cluster (`destroy`)."""
    tasks = list(_taskserv_tasks(catalog, infra, infra.taskservs)) if infra.taskservs else []
    tasks += [_server_task(catalog, i, s) for i, s in enumerate(infra.servers)]
    for cluster in infra.clusters:
        params = {"name": cluster.name, "cluster_type": cluster.cluster_type, **cluster.params}
        tasks.append(
            catalog.task(
                cluster.provider,
                "cluster",
                "create",
                name=f"cluster {cluster.name}",
                params=params,
                origin=f"clusters[{infra.clusters.index(cluster)}]",
            )
        )
    items = set()
    for task in tasks:
        declared = catalog.by_action(task.provider, task.action)
        name = None if declared is None else declared.item(task.params, task.name)
        if declared is not None and name is not None:
            items.add((task.provider, declared.kind.name, name))
    return sorted(items)
