"""What every host endpoint does: find the `host` instance, read at once, or submit a
change as a one-task workflow (the generic machinery of `orchestrator.api.providers`,
with the seed's shapes around it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.datastructures import State

from orchestrator.api.controllers import orchestrator_of, submit
from orchestrator.errors import InvalidInput, NotFound, PermissionDenied
from orchestrator.http.envelope import Envelope
from orchestrator.resources import Catalog, Declared
from orchestrator.specs import WorkflowSpec
from providers.base import JSON, InvalidParams

TYPE = "host"


class Change(msgspec.Struct, forbid_unknown_fields=True):
    """How to run a change: in check mode (say what it would do, change nothing), and
    whether to wait (up to `server.wait_timeout`) for it to end."""

    check_mode: bool = False
    wait: bool = False


class ChangeOut(msgspec.Struct):
    """A change accepted: the workflow doing it, and its status when answered."""

    message: str
    workflow_id: str
    status: str
    check_mode: bool
    #: The policy name of what it changes (`network:eth0`).
    resource: str


def host_instance(catalog: Catalog, instance: str | None) -> str:
    """The `host` instance a request means: the one configured, or the one it names."""
    hosts = sorted(name for name, type_name in catalog.types.items() if type_name == TYPE)
    if instance is not None:
        if instance not in hosts:
            raise NotFound(
                f"instance: '{instance}' is not a host provider instance "
                f"(configured: {', '.join(hosts) or 'none'})"
            )
        return instance
    if not hosts:
        raise NotFound(
            "no provider instance of type 'host' is configured: add one to the settings "
            '([providers.host] type = "host"; see docs/host.md)'
        )
    if len(hosts) > 1:
        raise InvalidInput(f"instance: several host instances ({', '.join(hosts)}): name one")
    return hosts[0]


def _declared(catalog: Catalog, instance: str, kind: str, operation: str) -> Declared:
    return catalog.lookup(instance, kind, operation)


def checked(catalog: Catalog, declared: Declared, params: Mapping[str, Any]) -> None:
    """The operation's own checks, the field named as the request spells it (the body's
    fields, `name` for the path's)."""
    validate = getattr(catalog.providers[declared.instance], "validate", None)
    if validate is None:
        return
    try:
        validate(declared.kind.name, declared.operation.name, params)
    except InvalidParams as exc:
        raise InvalidInput(f"{exc.path}: {exc.message}" if exc.path else exc.message) from None


async def host_read(
    state: State, kind: str, operation: str, params: JSON, instance: str | None
) -> JSON:
    orchestrator = orchestrator_of(state)
    catalog = orchestrator.catalog
    declared = _declared(catalog, host_instance(catalog, instance), kind, operation)
    checked(catalog, declared, params)
    return await orchestrator.read(declared, params)


async def host_change(
    state: State,
    request: Request[Any, Any, Any],
    kind: str,
    operation: str,
    params: JSON,
    change: Change,
    instance: str | None,
    message: str,
) -> Response[Envelope[ChangeOut]]:
    """Validate, check the process's privilege, then submit `<kind>.<operation>` as a
    one-task workflow answered at once (202) with its id (`wait` holds the answer)."""
    orchestrator = orchestrator_of(state)
    catalog = orchestrator.catalog
    name = host_instance(catalog, instance)
    declared = _declared(catalog, name, kind, operation)
    checked(catalog, declared, params)
    if not change.check_mode:
        lacks = getattr(catalog.providers[name], "lacks_privilege", None)
        refusal = lacks(kind, operation) if lacks is not None else None
        if refusal is not None:
            raise PermissionDenied(refusal)
    item = declared.item(params, "") or ""
    title = f"{operation} {kind} {item}".strip()
    task = catalog.task(name, kind, operation, name=title, params=params, origin="params")
    spec = WorkflowSpec(
        kind=kind,
        name=title,
        tasks=[task],
        check_mode=change.check_mode,
        request={"instance": name, "kind": kind, "operation": operation},
    )
    answered = await submit(orchestrator, request, spec, change.wait)
    workflow_id = answered.content.data
    status = answered.headers.get("X-Workflow-Status", "Pending")
    out = ChangeOut(
        message=message,
        workflow_id=workflow_id,
        status=status,
        check_mode=change.check_mode,
        resource=f"{declared.kind.plural}:{item}",
    )
    return Response(Envelope(out), status_code=answered.status_code, headers=answered.headers)
