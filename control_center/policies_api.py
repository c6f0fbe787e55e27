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

from control_center import policy_set
from control_center.conditions import ConditionError, parse_condition
from control_center.middleware import CHANGES_NOTHING
from control_center.policies import compile_rules
from control_center.request_context import (
    AnyRequest,
    CurrentPrincipal,
    audit_as,
    check,
    client_ip,
    services,
)
from control_center.schemas import (
    ConditionCheck,
    ConditionIn,
    PolicyCreated,
    PolicyIn,
    PolicyOut,
    PolicyUpdate,
    policy_out,
)
from control_center.store import policies as store
from control_center.store.records import NewPolicy, PolicyChanges
from orchestrator.http.envelope import Envelope
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers


def _as_managed_from(request: AnyRequest) -> dict[str, Any]:
    """The request context the lockout rule evaluates the administrators in: from this
    caller's address, as an update would be (`policy_set._changing`)."""
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
        found, total = await store.list_policies(services(state).db, limit, offset)
        return Response(
            Envelope([policy_out(policy) for policy in found]),
            headers=page_headers(request, total, limit, offset),
        )

    @post(
        "/validate",
        status_code=HTTP_200_OK,
        opt={CHANGES_NOTHING: True},
        summary="Check a rule's condition: valid, or the error and its line and column",
    )
    async def validate(
        self,
        request: AnyRequest,
        principal: CurrentPrincipal,
        data: JSONBody[ConditionIn],
    ) -> Envelope[ConditionCheck]:
        """The parser `create` and `update` use, on one condition, without storing it: an
        editor asks as its user types (a refusal is audited; an answer is not, as it
        changes nothing)."""
        await check(request, principal, "validate", "policies:*")
        try:
            parse_condition(data.condition)
        except ConditionError as exc:
            return Envelope(ConditionCheck(False, exc.reason, exc.line, exc.column))
        return Envelope(ConditionCheck(True))

    @get("/{policy_id:str}", summary="A policy")
    async def show(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        policy_id: FromPath[str],
    ) -> Envelope[PolicyOut]:
        await check(request, principal, "read", f"policies:{policy_id}")
        return Envelope(policy_out(await store.get_policy(services(state).db, policy_id)))

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
        created = await policy_set.create_policy(
            services(state).db,
            NewPolicy(
                name=data.name,
                rules=rules,
                version=data.version,
                description=data.description,
                enabled=data.enabled,
            ),
            _as_managed_from(request),
        )
        audit_as(request, "policies.create", f"policies:{created.id}", name=data.name)
        return Envelope(PolicyCreated(created.id, created.name, created.version))

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
        rules = None if data.rules is None else msgspec.to_builtins(data.rules)
        if rules is not None:
            compile_rules(rules)
        changes = PolicyChanges(
            name=data.name,
            version=data.version,
            description=data.description,
            rules=rules,
            enabled=data.enabled,
        )
        await policy_set.update_policy(
            services(state).db, policy_id, changes, _as_managed_from(request)
        )
        audit_as(
            request, "policies.update", f"policies:{policy_id}", changed=sorted(changes.given())
        )
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
        await policy_set.delete_policy(services(state).db, policy_id, _as_managed_from(request))
        return Envelope("Policy deleted successfully")
