"""What the `containers` type does: containers and images on a container engine, and
the replicas and records of app deployments (seed 002) built from them."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from providers.base import Kind, Operation

#: A container name as engines take it.
ContainerName = Annotated[
    str, msgspec.Meta(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$", max_length=128)
]
#: An image reference: `[registry[:port]/]path[:tag][@digest]`.
ImageRef = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._/:@-]{0,254}$",
        max_length=255,
        description="an image reference: [registry[:port]/]path[:tag][@digest]",
    ),
]
#: An environment variable's name: no `=`, no NUL, what a shell can name.
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")]
EnvValue = Annotated[str, msgspec.Meta(max_length=32_768)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
#: 0: any free port the engine picks.
HostPort = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")]
AppName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
#: A host name a deployment answers to: dot-separated labels of letters, digits and
#: inner hyphens (1 to 63 each), two labels at least, 253 characters at most; no `/`,
#: no empty label (`..`), no port. Compared lowercased.
HostName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$",
        max_length=253,
        description="a host name: labels of letters, digits and inner hyphens, dot-separated",
    ),
]
Seconds = Annotated[int, msgspec.Meta(ge=0, le=3600)]
PositiveSeconds = Annotated[int, msgspec.Meta(ge=1, le=3600)]


def log_entry(stamp: str, message: str, source: str) -> dict[str, str]:
    """A log line as the API shows it (seed 002's fields): `source` is the replica."""
    return {"timestamp": stamp, "level": "info", "message": message, "source": source}


class PortBinding(msgspec.Struct, forbid_unknown_fields=True):
    container_port: Port
    host_port: HostPort = 0
    protocol: Literal["tcp", "udp"] = "tcp"


class ContainerCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: ContainerName
    image: ImageRef
    env: dict[EnvName, EnvValue] = {}
    #: Published on the instance's `publish_ip` (loopback by default).
    ports: list[PortBinding] = []
    labels: dict[Label, Label] = {}
    command: list[Annotated[str, msgspec.Meta(max_length=4096)]] | None = None
    #: Start it once created.
    start: bool = False


class ContainerNamed(msgspec.Struct, forbid_unknown_fields=True):
    name: ContainerName


class ContainerDelete(msgspec.Struct, forbid_unknown_fields=True):
    name: ContainerName
    #: Remove it even while it runs (else a running container is refused).
    force: bool = False


class ContainerList(msgspec.Struct, forbid_unknown_fields=True):
    #: Stopped ones too.
    all: bool = True
    #: Only those carrying these labels.
    labels: dict[Label, Label] = {}


class ContainerLogs(msgspec.Struct, forbid_unknown_fields=True):
    name: ContainerName
    tail: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100


class ImagePull(msgspec.Struct, forbid_unknown_fields=True):
    image: ImageRef


class HealthCheck(msgspec.Struct, forbid_unknown_fields=True):
    """Seed 002's HTTP health check: GET `path` on the replica's published port."""

    path: Annotated[str, msgspec.Meta(pattern=r"^/[^\s\x00]{0,1023}$")] = "/"
    initial_delay_seconds: Seconds = 0
    period_seconds: PositiveSeconds = 10
    timeout_seconds: PositiveSeconds = 5
    failure_threshold: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3


class Resources(msgspec.Struct, forbid_unknown_fields=True):
    """Seed 002's limits, Kubernetes-style quantities: `cpu` (`100m`, `0.5`, `2`) and
    `memory` (`128Mi`, `1Gi`)."""

    cpu: Annotated[str, msgspec.Meta(pattern=r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")] | None = None
    memory: Annotated[str, msgspec.Meta(pattern=r"^[0-9]+(Ki|Mi|Gi|K|M|G)?$")] | None = None


class Domain(msgspec.Struct, forbid_unknown_fields=True):
    """A custom domain mapped to a deployment (unique across deployments)."""

    id: Id
    domain: HostName
    created_at: Annotated[str, msgspec.Meta(max_length=64)]


Domains = Annotated[list[Domain], msgspec.Meta(max_length=100)]


class ReplicaCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One replica of a deployment: a container labelled with the deployment's id,
    publishing `port` on a free loopback port, healthy before the task completes."""

    name: ContainerName
    deployment: Id
    image: ImageRef
    port: Port
    env_vars: dict[EnvName, EnvValue] = {}
    health_check: HealthCheck | None = None
    resources: Resources | None = None


class ReplicaNamed(msgspec.Struct, forbid_unknown_fields=True):
    name: ContainerName


class ReplicaRestart(msgspec.Struct, forbid_unknown_fields=True):
    """A replica restarted (the health monitor's: it failed its health check), healthy
    before the task completes; counted in its deployment's record (`restarts`)."""

    name: ContainerName
    deployment: Id


class ReplicaList(msgspec.Struct, forbid_unknown_fields=True):
    deployment: Id
    #: Probe each running replica's health check now.
    probe: bool = True


class ReplicaStats(msgspec.Struct, forbid_unknown_fields=True):
    deployment: Id


class DeploymentCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A deployment's record (seed 002): what its replicas should be."""

    id: Id
    owner: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    app_name: AppName
    image: ImageRef
    port: Port
    replicas: Annotated[int, msgspec.Meta(ge=0, le=10_000)]
    env_vars: dict[EnvName, EnvValue] = {}
    health_check: HealthCheck | None = None
    resources: Resources | None = None
    domains: Domains = []


class DeploymentUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A change of a deployment's record: the fields given replace the recorded ones."""

    id: Id
    image: ImageRef | None = None
    replicas: Annotated[int, msgspec.Meta(ge=0, le=10_000)] | None = None
    env_vars: dict[EnvName, EnvValue] | None = None
    health_check: HealthCheck | None = None
    resources: Resources | None = None
    state: Literal["running", "stopped", "deleting"] | None = None
    #: The whole list (add and remove give the list as it should be).
    domains: Domains | None = None


class DeploymentNamed(msgspec.Struct, forbid_unknown_fields=True):
    id: Id


KINDS: tuple[Kind, ...] = (
    Kind(
        "container",
        "containers",
        (
            Operation("create", ContainerCreate, undo="delete", summary="create a container"),
            Operation("start", ContainerNamed, undo="stop", summary="start a container"),
            Operation("stop", ContainerNamed, undo="start", summary="stop a container"),
            Operation("delete", ContainerDelete, summary="remove a container"),
            Operation("read", ContainerNamed, mutates=False, summary="a container, live"),
            Operation("list", ContainerList, mutates=False, summary="the engine's containers"),
            Operation("logs", ContainerLogs, mutates=False, summary="a container's last log lines"),
        ),
        summary="a container on the engine",
    ),
    Kind(
        "image",
        "docker",
        (Operation("pull", ImagePull, summary="pull an image into the engine"),),
        key="image",
        summary="an image in the engine's store",
    ),
    # A replica is part of its deployment: policies name it `deployments:<id>`.
    Kind(
        "replica",
        "deployments",
        (
            Operation("create", ReplicaCreate, undo="delete", summary="run a healthy replica"),
            Operation("delete", ReplicaNamed, undo="create", summary="remove a replica"),
            Operation("stop", ReplicaNamed, undo="start", summary="stop a replica"),
            Operation("start", ReplicaNamed, undo="stop", summary="start a replica, healthy"),
            Operation(
                "restart", ReplicaRestart, summary="restart a replica, healthy again (counted)"
            ),
            Operation("list", ReplicaList, mutates=False, summary="replicas, probed"),
            Operation(
                "stats", ReplicaStats, mutates=False, summary="replicas' engine stats, sampled"
            ),
        ),
        key="deployment",
        summary="one container of a deployment",
    ),
    Kind(
        "deployment",
        "deployments",
        (
            Operation("create", DeploymentCreate, undo="delete", summary="record a deployment"),
            Operation("update", DeploymentUpdate, undo="update", summary="change its record"),
            Operation("delete", DeploymentNamed, undo="create", summary="forget a deployment"),
        ),
        key="id",
        summary="an app deployment's record (seed 002)",
    ),
)
