"""Batches (seed 003): operations that depend on operations, each expanding into tasks.

A batch is a workflow of kind `batch` whose tasks are grouped by `operation_id`. An
operation's dependency on another becomes an edge from each of its tasks to each of the
other's (hard: run only if it completed; soft: run once it ended, however). Everything
here is pure: parsing, validation with the exact path of a problem, and expansion. An
operation type is a kind and an operation (`server_batch`: `server.create`), which the
catalog resolves on the operation's provider instance (`orchestrator.resources`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from orchestrator.errors import InvalidInput
from orchestrator.fields import EnvName, Identifier, Name, ParallelLimit, Text, Version
from orchestrator.graph import build_graph
from orchestrator.planner import TaskLimits
from orchestrator.resources import Catalog
from orchestrator.specs import TaskSpec, WorkflowSpec

OperationType = Literal["server_batch", "taskserv_batch", "cluster_batch", "command_batch"]
OnFailure = Literal["fail", "continue", "rollback"]
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
#: Seconds, up to a week (as a task's own timeout).
Timeout = Annotated[float, msgspec.Meta(gt=0, le=7 * 86_400)]
#: Any name is accepted; the batch runs on the server's store (`storage_warnings`).
StorageBackend = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
        description="The store the client expects; the server's own store is used, with a "
        "warning when this names another one.",
        extra_json_schema={"examples": list(SUPPORTED_BACKENDS)},
    ),
]


class Dependency(msgspec.Struct, forbid_unknown_fields=True):
    id: Identifier
    type: Literal["hard", "soft"] = "hard"


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True):
    name: Identifier
    plan: Name | None = None
    zone: Name | None = None
    params: dict[str, Any] = {}


class ClusterConfig(msgspec.Struct, forbid_unknown_fields=True):
    name: Identifier
    cluster_type: Identifier
    params: dict[str, Any] = {}


class UndoCommand(msgspec.Struct, forbid_unknown_fields=True):
    command: Text
    args: list[Text] = []
    env: dict[EnvName, Text] = {}
    cwd: Text | None = None


class Command(msgspec.Struct, forbid_unknown_fields=True):
    name: Identifier
    command: Text
    args: list[Text] = []
    env: dict[EnvName, Text] = {}
    cwd: Text | None = None
    undo: UndoCommand | None = None
    timeout: Timeout | None = None


class Operation(msgspec.Struct, forbid_unknown_fields=True):
    id: Identifier
    type: OperationType
    provider: Identifier | None = None
    dependencies: list[Identifier | Dependency] = []
    on_failure: OnFailure | None = None
    server_configs: list[ServerConfig] = []
    taskservs: list[Identifier] = []
    #: servers a taskserv_batch installs on (one task per taskserv and server)
    servers: list[Identifier] = []
    clusters: list[ClusterConfig] = []
    commands: list[Command] = []
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    timeout: Timeout | None = None
    #: failure injection for the simulated cloud, passed to every task's params
    simulate: dict[str, Any] | None = None


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    operations: Annotated[list[Operation], msgspec.Meta(min_length=1, max_length=1000)]
    version: Version = "1.0.0"
    storage_backend: StorageBackend | None = None
    parallel_limit: ParallelLimit | None = None
    rollback_enabled: bool = False
    check_mode: bool = False


def _dependency(raw: str | Dependency) -> Dependency:
    return Dependency(raw) if isinstance(raw, str) else raw


def storage_warnings(batch: Batch, configured: str) -> list[str]:
    """The state store is the server's: a batch that names another one (the reference
    API's `surrealdb`, say) runs on the server's all the same, and is told so."""
    wanted = batch.storage_backend
    if wanted is None or wanted.lower() == configured:
        return []
    return [
        f"storage_backend: '{wanted}' is not this orchestrator's store; the batch runs on "
        f"its configured store, '{configured}' (chosen by the server's database_url)"
    ]


def _validate_operations(batch: Batch) -> None:
    ids = [op.id for op in batch.operations]
    for index, op in enumerate(batch.operations):
        if ids.index(op.id) != index:
            raise InvalidInput(f"operations[{index}].id: duplicate operation id '{op.id}'")
        for dep_index, raw in enumerate(op.dependencies):
            dep = _dependency(raw)
            if dep.id not in ids:
                raise InvalidInput(
                    f"operations[{index}].dependencies[{dep_index}]: unknown operation "
                    f"'{dep.id}' (operations: {', '.join(ids)})"
                )
    build_graph(
        [(op.id, [_dependency(d).id for d in op.dependencies]) for op in batch.operations],
        what="operations",
    )


def _provider(op: Operation, index: int, catalog: Catalog, does: tuple[str, str] | None) -> str:
    """The operation's instance; without one, the only instance that does `does`."""
    where = f"operations[{index}].provider"
    provider = op.provider
    if provider is None and does is not None:
        able = catalog.doing(*does)
        if len(able) > 1:
            raise InvalidInput(f"{where}: required, several instances can ({', '.join(able)})")
        provider = able[0] if able else None
    if provider is None:
        raise InvalidInput(f"{where}: required for a {op.type}")
    catalog.require(provider, where)
    return provider


def _with_simulate(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    return {**params, "simulate": op.simulate} if op.simulate else params


def _task_count(op: Operation) -> int:
    if op.type == "server_batch":
        return len(op.server_configs)
    if op.type == "taskserv_batch":
        return len(op.taskservs) * max(1, len(op.servers))
    if op.type == "cluster_batch":
        return len(op.clusters)
    return len(op.commands)


def _check_size(batch: Batch, limits: TaskLimits) -> None:
    """Refuse a batch too big before a single task of it is built."""
    for index, op in enumerate(batch.operations):
        limits.check_operation(f"operations[{index}]", _task_count(op))
    limits.check_workflow(sum(_task_count(op) for op in batch.operations))


def _expand(op: Operation, index: int, catalog: Catalog) -> list[TaskSpec]:
    where = f"operations[{index}]"
    tasks: list[TaskSpec] = []

    def task(action: str, subject: str, params: dict[str, Any], origin: str) -> TaskSpec:
        kind, _, operation = action.partition(".")
        spec = catalog.task(
            provider,
            kind,
            operation,
            name=f"{op.id}/{subject}",
            params=_with_simulate(op, params),
            origin=origin,
        )
        spec.max_attempts, spec.timeout, spec.operation_id = op.max_attempts, op.timeout, op.id
        tasks.append(spec)
        return spec

    if op.type == "server_batch":
        if not op.server_configs:
            raise InvalidInput(f"{where}.server_configs: a server_batch needs at least one server")
        provider = _provider(op, index, catalog, None)
        for i, server in enumerate(op.server_configs):
            params = {"name": server.name, **server.params}
            params.update({k: v for k, v in (("plan", server.plan), ("zone", server.zone)) if v})
            task("server.create", f"server {server.name}", params, f"{where}.server_configs[{i}]")
    elif op.type == "taskserv_batch":
        if not op.taskservs:
            raise InvalidInput(f"{where}.taskservs: a taskserv_batch needs at least one taskserv")
        provider = _provider(op, index, catalog, None)
        targets: list[str | None] = [*op.servers] or [None]
        for i, taskserv in enumerate(op.taskservs):
            for target in targets:
                ts_params: dict[str, Any] = {"name": taskserv}
                subject = f"taskserv {taskserv}"
                if target is not None:
                    ts_params["server"] = target
                    subject += f" on {target}"
                task("taskserv.create", subject, ts_params, f"{where}.taskservs[{i}]")
    elif op.type == "cluster_batch":
        if not op.clusters:
            raise InvalidInput(f"{where}.clusters: a cluster_batch needs at least one cluster")
        provider = _provider(op, index, catalog, None)
        for i, cluster in enumerate(op.clusters):
            params = {"name": cluster.name, "cluster_type": cluster.cluster_type, **cluster.params}
            task("cluster.create", f"cluster {cluster.name}", params, f"{where}.clusters[{i}]")
    else:
        if not op.commands:
            raise InvalidInput(f"{where}.commands: a command_batch needs at least one command")
        provider = _provider(op, index, catalog, ("command", "run"))
        if provider not in catalog.doing("command", "run"):
            raise InvalidInput(
                f"{where}.provider: a command_batch runs on an instance that runs commands "
                f"({', '.join(catalog.doing('command', 'run')) or 'none configured'})"
            )
        for i, command in enumerate(op.commands):
            params = {"command": command.command, "args": list(command.args)}
            if command.env:
                params["env"] = dict(command.env)
            if command.cwd is not None:
                params["cwd"] = command.cwd
            if command.undo is not None:
                params["undo"] = msgspec.to_builtins(command.undo)
            spec = task("command.run", command.name, params, f"{where}.commands[{i}]")
            spec.timeout = command.timeout or op.timeout
    return tasks


def plan_batch(batch: Batch, catalog: Catalog, limits: TaskLimits) -> WorkflowSpec:
    """Validate a batch and expand it into one workflow of tasks."""
    _check_size(batch, limits)
    _validate_operations(batch)
    default_failure = "rollback" if batch.rollback_enabled else "fail"
    expanded: dict[str, list[TaskSpec]] = {}
    for index, op in enumerate(batch.operations):
        tasks = _expand(op, index, catalog)
        for task in tasks:
            task.on_failure = op.on_failure or default_failure
        expanded[op.id] = tasks
    for op in batch.operations:
        for raw in op.dependencies:
            dep = _dependency(raw)
            upstream = [t.name for t in expanded[dep.id]]
            for task in expanded[op.id]:
                (task.soft_dependencies if dep.type == "soft" else task.dependencies).extend(
                    upstream
                )
    return WorkflowSpec(
        kind="batch",
        name=batch.name,
        tasks=[t for op in batch.operations for t in expanded[op.id]],
        parallel_limit=batch.parallel_limit,
        rollback_enabled=batch.rollback_enabled,
        check_mode=batch.check_mode,
        request=msgspec.to_builtins(batch),
    )
