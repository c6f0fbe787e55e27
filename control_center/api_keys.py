"""`/api-keys` (seed 002): create (the key is shown once), list, revoke.

A key acts as its owner, with the owner's roles and policies. Keys are resources
`api-keys:<id>` owned by their user (`resource.owner` in conditions); the default
policies let everyone manage their own and only administrators anyone else's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from litestar import Controller, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from control_center.request_context import (
    AnyRequest,
    CurrentPrincipal,
    audit_as,
    check,
    services,
)
from control_center.schemas import ApiKeyBody, ApiKeyCreated, ApiKeyIn, ApiKeyOut, api_key_out
from control_center.store import api_keys as store
from control_center.store.records import ApiKey, NewApiKey
from control_center.tokens import API_KEY_SHOWN_CHARS, digest, new_api_key, utcnow
from orchestrator.errors import InvalidInput
from orchestrator.http.envelope import Envelope
from orchestrator.http.pagination import (
    DEFAULT_LIMIT,
    Limit,
    Offset,
    Page,
    check_page,
    offset_of_page,
    page_headers,
)
from orchestrator.store.engine import AsyncEngine

#: The longest life of a key, whichever way it is given (`ApiKeyIn.expires_in_days` has
#: the same bound): a key is a password that nobody types, so it must end some day.
MAX_LIFETIME_DAYS = 3650


def _expiry(data: ApiKeyIn) -> datetime | None:
    """When the key expires; `InvalidInput` names the field and the bound it breaks."""
    now = utcnow()
    if data.expires_in_days is not None:
        if data.expires_at is not None:
            raise InvalidInput("give expires_at or expires_in_days, not both")
        return now + timedelta(days=data.expires_in_days)
    expires_at = data.expires_at
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        raise InvalidInput("expires_at: must include a time zone (for example Z)")
    if expires_at <= now:
        raise InvalidInput("expires_at: must be in the future")
    if expires_at > now + timedelta(days=MAX_LIFETIME_DAYS):
        raise InvalidInput(
            f"expires_at: must be at most {MAX_LIFETIME_DAYS} days from now "
            "(the bound of expires_in_days)"
        )
    return expires_at


async def issue_api_key(
    engine: AsyncEngine, user_id: str, name: str, description: str, expires_at: datetime | None
) -> tuple[ApiKey, str]:
    """Store a new key for `user_id`; return its record and the key (shown once)."""
    key = new_api_key()
    stored = await store.create_api_key(
        engine,
        NewApiKey(
            user_id=user_id,
            name=name,
            description=description,
            prefix=key[:API_KEY_SHOWN_CHARS],
            key_hash=digest(key),
            expires_at=expires_at,
        ),
    )
    return stored, key


class ApiKeyController(Controller):
    path = "/api-keys"
    tags = ["api-keys"]

    @post("/", status_code=HTTP_201_CREATED, summary="Create an API key (shown once)")
    async def create(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        data: JSONBody[ApiKeyBody],
    ) -> Envelope[ApiKeyCreated]:
        await check(request, principal, "create", "api-keys:*", owner=principal.user_id)
        expires_at = _expiry(data)
        stored, key = await issue_api_key(
            services(state).db, principal.user_id, data.name, data.description, expires_at
        )
        audit_as(request, "api-keys.create", f"api-keys:{stored.id}", prefix=stored.prefix)
        return Envelope(
            ApiKeyCreated(
                id=stored.id,
                name=stored.name,
                description=stored.description,
                key=key,
                key_prefix=stored.prefix,
                created_at=stored.created_at,
                expires_at=stored.expires_at,
            )
        )

    @get("/", summary="List your API keys (administrators: anyone's, with user_id)")
    async def list(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        user_id: FromQuery[str | None] = None,
        include_revoked: FromQuery[bool] = False,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
        page: Page = None,
    ) -> Response[Envelope[list[ApiKeyOut]]]:
        owner = user_id or principal.user_id
        await check(request, principal, "list", "api-keys:*", owner=owner)
        offset = offset_of_page(page, limit, offset)
        check_page(limit, offset)
        found, total = await store.list_api_keys(
            services(state).db, owner, include_revoked, limit, offset
        )
        return Response(
            Envelope([api_key_out(key) for key in found]),
            headers=page_headers(request, total, limit, offset),
        )

    @delete("/{key_id:str}", status_code=HTTP_200_OK, summary="Revoke an API key")
    async def revoke(
        self, request: AnyRequest, state: State, principal: CurrentPrincipal, key_id: FromPath[str]
    ) -> Envelope[str]:
        engine = services(state).db
        audit_as(request, "api-keys.delete", f"api-keys:{key_id}")
        stored = await store.get_api_key(engine, key_id)
        await check(request, principal, "delete", f"api-keys:{key_id}", owner=stored.user_id)
        await store.revoke_api_key(engine, key_id)
        return Envelope("API key revoked successfully")
