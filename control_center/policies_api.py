"""`/policies`: list, read, create, update, delete (seed 003). Rules are checked when
they are sent, so a stored policy always compiles; a change takes effect at once. A
change after which no enabled administrator could manage policies is refused (409)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from control_center import policy_store
from control_center.policies import compile_rules
from control_center.request_context import (
    AnyRequest,
    CurrentPrincipal,
    audit_as,
    check,
    client_ip,
    services,
)
from control_center.schemas import PolicyCreated, PolicyIn, PolicyOut, PolicyUpdate, policy_out
from orchestrator.http.envelope import Envelope
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers


def _as_managed_from(request: AnyRequest) -> dict[str, Any]:
    """The request context the lockout rule evaluates the administrators in: from this
    caller's address, as an update would be (`policy_store._changing`)."""
    return {"ip": client_ip(request), "method": "PUT"}


class PolicyController(Controller):
    path = "/policies"
    tags = ["policies"]

    @get("/", summary="List policies")
    async def list(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[PolicyOut]]]:
        await check(request, principal, "list", "policies:*")
        check_page(limit, offset)
        rows, total = await policy_store.list_policies(services(state).db, limit, offset)
        return Response(
            Envelope([policy_out(row) for row in rows]),
            headers=page_headers(request, total, limit, offset),
        )

    @get("/{policy_id:str}", summary="A policy")
    async def show(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        policy_id: FromPath[str],
    ) -> Envelope[PolicyOut]:
        await check(request, principal, "read", f"policies:{policy_id}")
        return Envelope(policy_out(await policy_store.get_policy(services(state).db, policy_id)))

    @post("/", status_code=HTTP_201_CREATED, summary="Create a policy")
    async def create(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        data: JSONBody[PolicyIn],
    ) -> Envelope[PolicyCreated]:
        await check(request, principal, "create", "policies:*")
        rules = msgspec.to_builtins(data.rules)
        compile_rules(rules)
        row = await policy_store.create_policy(
            services(state).db,
            {
                "name": data.name,
                "version": data.version,
                "description": data.description,
                "rules": rules,
                "enabled": data.enabled,
            },
            _as_managed_from(request),
        )
        audit_as(request, "policies.create", f"policies:{row['id']}", name=data.name)
        return Envelope(PolicyCreated(row["id"], row["name"], row["version"]))

    @put("/{policy_id:str}", status_code=HTTP_200_OK, summary="Update a policy")
    async def update(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        policy_id: FromPath[str],
        data: JSONBody[PolicyUpdate],
    ) -> Envelope[str]:
        await check(request, principal, "update", f"policies:{policy_id}")
        fields: dict[str, Any] = {
            key: getattr(data, key)
            for key in ("name", "version", "description", "rules", "enabled")
            if getattr(data, key) is not None
        }
        if "rules" in fields:
            fields["rules"] = msgspec.to_builtins(fields["rules"])
            compile_rules(fields["rules"])
        await policy_store.update_policy(
            services(state).db, policy_id, fields, _as_managed_from(request)
        )
        audit_as(request, "policies.update", f"policies:{policy_id}", changed=sorted(fields))
        return Envelope("Policy updated successfully")

    @delete("/{policy_id:str}", status_code=HTTP_200_OK, summary="Delete a policy")
    async def remove(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        policy_id: FromPath[str],
    ) -> Envelope[str]:
        await check(request, principal, "delete", f"policies:{policy_id}")
        await policy_store.delete_policy(services(state).db, policy_id, _as_managed_from(request))
        return Envelope("Policy deleted successfully")
