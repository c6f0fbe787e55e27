"""The generic entry points made from the providers' declarations (`orchestrator.resources`):
what each instance does (`GET /providers`), and doing one operation of it
(`POST /providers/{instance}/{kind}/{operation}`).

A mutating operation becomes a one-task workflow, answered as the other workflow
endpoints answer (202, the workflow id, `Location`, `X-Workflow-Status`); a read-only one
is answered at once with its result. Policies: the route is `apply` on
`providers:<instance>`; each item `<operation>` on `<plural>:<name>`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

import msgspec
from litestar import Controller, Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from orchestrator.api.controllers import orchestrator_of, security_of, submit
from orchestrator.api.schemas import ApplyIn, KindOut, ProviderOperationOut, ProviderOut
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.http.envelope import Envelope
from orchestrator.http.openapi import FREE_FORM, REF, nul_free
from orchestrator.resources import Catalog, Declared
from orchestrator.specs import WorkflowSpec
from providers.base import Kind

#: The longest action, workflow kind and task name the store keeps.
MAX_ACTION, MAX_KIND, MAX_NAME = 64, 32, 200


def operation_out(kind: Kind, declared: Declared) -> ProviderOperationOut:
    op = declared.operation
    return ProviderOperationOut(
        name=op.name,
        action=kind.action(op),
        mutates=op.mutates,
        undo=op.undo if op.mutates else None,
        summary=op.summary,
        params=msgspec.json.schema(op.params),
    )


def provider_out(catalog: Catalog, instance: str) -> ProviderOut:
    kinds = [
        KindOut(
            name=kind.name,
            plural=kind.plural,
            key=kind.key,
            operations=[
                operation_out(kind, d) for d in catalog.operations(instance) if d.kind is kind
            ],
        )
        for kind in catalog.kinds(instance)
    ]
    return ProviderOut(
        name=instance,
        type=catalog.types[instance],
        touches_host=instance in catalog.host,
        declared=catalog.declares(instance),
        kinds=kinds,
    )


def _one_task(
    catalog: Catalog, instance: str, kind: str, operation: str, data: ApplyIn
) -> WorkflowSpec:
    declared = catalog.lookup(instance, kind, operation) if catalog.declares(instance) else None
    action = declared.action if declared is not None else f"{kind}.{operation}"
    if len(action) > MAX_ACTION:
        raise InvalidInput(f"kind and operation: at most {MAX_ACTION} characters together")
    item = declared.item(data.params, "") if declared is not None else data.params.get("name")
    name = f"{operation} {kind}" + (f" {item}" if item else "")
    task = catalog.task(
        instance, kind, operation, name=name[:MAX_NAME], params=data.params, origin="params"
    )
    return WorkflowSpec(
        kind=kind[:MAX_KIND],
        name=name[:MAX_NAME],
        tasks=[task],
        check_mode=data.check_mode,
        request={"instance": instance, "kind": kind, "operation": operation},
    )


class ProviderController(Controller):
    path = "/providers"
    tags = ["providers"]

    @get("/", summary="Provider instances, with their kinds and operations")
    async def list(self, state: State) -> Envelope[list[ProviderOut]]:
        catalog = orchestrator_of(state).catalog
        return Envelope([provider_out(catalog, name) for name in sorted(catalog.providers)])

    @post(
        "/{instance:str}/{kind:str}/{operation:str}",
        status_code=HTTP_202_ACCEPTED,
        summary="Do one operation of a provider instance",
        description="A mutating operation answers 202 with the id of its one-task workflow; "
        "a read-only one answers 200 with its result.",
        responses={
            HTTP_200_OK: ResponseSpec(
                data_container=Envelope[dict[str, Any]],
                description="The result of a read-only operation",
                generate_examples=False,
            )
        },
    )
    async def apply(
        self,
        state: State,
        request: Request[Any, Any, Any],
        instance: str,
        kind: str,
        operation: str,
        data: ApplyIn,
    ) -> Response[Envelope[str]]:
        orchestrator = orchestrator_of(state)
        catalog = orchestrator.catalog
        if instance not in catalog.providers:
            raise NotFound(
                f"provider instance '{instance}' is not configured "
                f"(configured: {', '.join(sorted(catalog.providers))})"
            )
        spec = _one_task(catalog, instance, kind, operation, data)
        declared = catalog.by_action(instance, spec.tasks[0].action)
        if declared is None or declared.operation.mutates:
            return await submit(orchestrator, request, spec, data.wait)
        catalog.check_params(declared, data.params, "params")
        await security_of(request).authorize_items(request.scope, catalog.items(spec))
        result = await orchestrator.read(declared, data.params)
        return cast(Response[Envelope[str]], Response(Envelope(result), status_code=HTTP_200_OK))


GENERIC = "/providers/{instance}/{kind}/{operation}"


def publish_operations(app: Litestar, catalog: Catalog) -> None:
    """Document each declared operation as a path of its own, with its params' schema:
    `POST /providers/{instance}/server/create` (`instance`: those declaring it). The
    generic route serves them; call after `openapi.publish`, whose components and
    free-form rules this reuses."""
    document: dict[str, Any] = app.plugins.get("OpenAPIPlugin").provide_openapi_schema()
    generic = document["paths"].get(GENERIC, {}).get("post")
    if generic is None:
        return
    schemas = document["components"]["schemas"]
    by_path: dict[tuple[str, str], list[Declared]] = {}
    for instance in sorted(catalog.providers):
        for declared in catalog.operations(instance):
            key = (declared.kind.name, declared.operation.name)
            by_path.setdefault(key, []).append(declared)
    params_of = _components(schemas, by_path.values())
    for (kind, operation), found in sorted(by_path.items()):
        document["paths"][f"/providers/{{instance}}/{kind}/{operation}"] = {
            "post": _path_operation(generic, kind, operation, found, params_of)
        }


def _components(
    schemas: dict[str, Any], groups: Iterable[list[Declared]]
) -> dict[type[msgspec.Struct], dict[str, Any]]:
    """The params structs as components named `<type>.<Struct>`; a reference to each."""
    by_type: dict[str, set[type[msgspec.Struct]]] = {}
    for found in groups:
        for declared in found:
            by_type.setdefault(declared.type_name, set()).add(declared.operation.params)
    refs: dict[type[msgspec.Struct], dict[str, Any]] = {}
    for type_name, structs in sorted(by_type.items()):
        ordered = sorted(structs, key=lambda s: s.__name__)
        template = REF.replace("{name}", f"{type_name}.{{name}}")
        made, components = msgspec.json.schema_components(ordered, ref_template=template)
        for name, component in components.items():
            if "properties" in component and "additionalProperties" not in component:
                # Other params are taken (and kept): any JSON value without a NUL.
                component["additionalProperties"] = {"$ref": REF.format(name=FREE_FORM)}
            nul_free(component)
            schemas[f"{type_name}.{name}"] = component
        refs.update(zip(ordered, made, strict=True))
    return refs


def _path_operation(
    generic: dict[str, Any],
    kind: str,
    operation: str,
    found: list[Declared],
    params_of: Mapping[type[msgspec.Struct], dict[str, Any]],
) -> dict[str, Any]:
    published = copy.deepcopy(generic)
    mutates = found[0].operation.mutates
    published["operationId"] = "Apply" + "".join(
        part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", f"{kind} {operation}") if part
    )
    published["summary"] = found[0].operation.summary or f"{operation} a {kind}"
    published["parameters"] = [
        {
            "name": "instance",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": [d.instance for d in found]},
        }
    ]
    structs = list(dict.fromkeys(d.operation.params for d in found))
    params = (
        params_of[structs[0]] if len(structs) == 1 else {"anyOf": [params_of[s] for s in structs]}
    )
    body = {
        "type": "object",
        "properties": {
            "params": params,
            "check_mode": {"type": "boolean", "default": False},
            "wait": {"type": "boolean", "default": False},
        },
        "additionalProperties": False,
    }
    published["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": body}},
    }
    # A mutating operation answers 202 (its workflow), a read 200 (its result).
    published["responses"].pop("200" if mutates else "202", None)
    return published
