"""What the simulated cloud does: servers, taskservs and clusters, and `noop`.

Params besides the declared ones are kept in the resource's data, as a cloud keeps
labels. `simulate` injects failures in any operation.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from providers.base import Kind, Operation

#: A name the inventory keeps (a taskserv's row is `name@server`, within its 200).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=86_400)]


class Simulate(msgspec.Struct, forbid_unknown_fields=True):
    """Failure injection: `fail` (true or "always": every attempt fails; "permanent":
    fails without retry), `fail_attempts` (attempts 1..N fail, later ones succeed),
    `latency` (exact seconds, overrides the instance's) and `fail_compensate`."""

    fail: bool | Literal["always", "permanent"] = False
    fail_attempts: Annotated[int, msgspec.Meta(ge=0)] = 0
    latency: Seconds | None = None
    fail_compensate: bool = False


class _Params(msgspec.Struct, kw_only=True):
    simulate: Simulate | None = None


class ServerCreate(_Params, kw_only=True):
    name: Name
    #: One of the instance's `plans`.
    plan: Name
    #: One of the instance's `zones`.
    zone: Name


class Named(_Params, kw_only=True):
    name: Name


class TaskservParams(_Params, kw_only=True):
    name: Name
    #: The server it is installed on (its inventory row is `name@server`).
    server: Name | None = None


class ClusterCreate(_Params, kw_only=True):
    name: Name
    cluster_type: Name


class ClusterNamed(_Params, kw_only=True):
    name: Name
    cluster_type: Name | None = None


class NoopParams(_Params, kw_only=True):
    pass


def _crud(
    name: str,
    plural: str,
    create: type[_Params],
    named: type[_Params],
    scope: str | None = None,
) -> Kind:
    return Kind(
        name,
        plural,
        (
            Operation("create", create, undo="delete", summary=f"create a {name}"),
            Operation("delete", named, undo="create", summary=f"delete a {name}"),
            Operation("read", named, mutates=False, summary=f"a {name} as recorded"),
        ),
        scope=scope,
    )


KINDS = (
    _crud("server", "servers", ServerCreate, Named),
    # Installed per server: `k8s@web-01` for policies and the inventory.
    _crud("taskserv", "taskservs", TaskservParams, TaskservParams, scope="server"),
    _crud("cluster", "clusters", ClusterCreate, ClusterNamed),
    Kind(
        "noop",
        "noops",
        (Operation("run", NoopParams, action="noop", undo="run", summary="do nothing"),),
        key=None,
    ),
)
#: The parameters that identify what was asked: a create with the same ones is a no-op.
IDENTITY = {"server": ("plan", "zone"), "taskserv": ("server",), "cluster": ("cluster_type",)}
