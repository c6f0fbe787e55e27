"""`/users` (administration, policy-checked) and `/user` (one's own profile and password)."""

from __future__ import annotations

from dataclasses import replace

from litestar import Controller, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from control_center.errors import Forbidden
from control_center.guard import MFA_PENDING, MUST_CHANGE_PASSWORD
from control_center.passwords import check_strength, hash_password_async, verify_password_async
from control_center.policies import ADMIN_ROLE
from control_center.request_context import (
    AnyRequest,
    CurrentPrincipal,
    audit_as,
    check,
    limit,
    services,
)
from control_center.schemas import (
    PasswordChange,
    ProfileOut,
    ProfileUpdate,
    UserIn,
    UserOut,
    UserUpdate,
    profile_out,
    user_out,
)
from control_center.store import users as store
from control_center.store.records import NewUser, User, UserChanges
from orchestrator.errors import Conflict, InvalidInput
from orchestrator.http.envelope import Envelope
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers
from orchestrator.settings import Settings


def checked_password(settings: Settings, password: str, username: str, field: str) -> None:
    check_strength(password, settings.auth.min_password_length, field=field)
    if username.lower() in password.lower():
        raise InvalidInput(f"{field}: must not contain the username")


async def _keep_an_admin(request: AnyRequest, user: User, update: UserChanges) -> None:
    """Refuse to remove, disable or demote the last enabled administrator."""
    if ADMIN_ROLE not in user.roles or not user.enabled:
        return
    roles = user.roles if update.roles is None else update.roles
    if update.enabled is not False and ADMIN_ROLE in roles:
        return
    admins = await store.enabled_users_with_role(services(request.app.state).db, ADMIN_ROLE)
    if admins == [user.id]:
        raise Conflict("this is the last enabled administrator; appoint another one first")


async def _check_current_password(
    request: AnyRequest, user: User, given: str | None, what: str
) -> None:
    """Refuse unless `given` is the user's password (403: a wrong proof of identity).
    Guessing it with a stolen token is as slow as logging in: every endpoint asking
    for it spends one budget."""
    budget = services(request.app.state).settings.auth.rate_limit_auth
    limit(request, f"password:{user.id}", budget)
    if given is None:
        raise InvalidInput(f"current_password: required to change {what}")
    if not await verify_password_async(given, user.password_hash):
        raise Forbidden("current_password: is not your current password")


class UserController(Controller):
    path = "/users"
    tags = ["users"]

    @get("/", summary="List users")
    async def list(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        role: FromQuery[str | None] = None,
        enabled: FromQuery[bool | None] = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[UserOut]]]:
        await check(request, principal, "list", "users:*")
        check_page(limit, offset)
        found, total = await store.list_users(services(state).db, role, enabled, limit, offset)
        return Response(
            Envelope([user_out(user) for user in found]),
            headers=page_headers(request, total, limit, offset),
        )

    @get("/{user_id:str}", summary="A user")
    async def show(
        self, request: AnyRequest, state: State, principal: CurrentPrincipal, user_id: FromPath[str]
    ) -> Envelope[UserOut]:
        await check(request, principal, "read", f"users:{user_id}")
        return Envelope(user_out(await store.get_user(services(state).db, user_id)))

    @post("/", status_code=HTTP_201_CREATED, summary="Create a user")
    async def create(
        self, request: AnyRequest, state: State, principal: CurrentPrincipal, data: JSONBody[UserIn]
    ) -> Envelope[UserOut]:
        await check(request, principal, "create", "users:*")
        service = services(state)
        checked_password(service.settings, data.password, data.username, "password")
        user = await store.create_user(
            service.db,
            NewUser(
                username=data.username,
                email=data.email,
                password_hash=await hash_password_async(data.password),
                roles=tuple(dict.fromkeys(data.roles)),
                enabled=data.enabled,
                must_change_password=data.must_change_password,
            ),
        )
        audit_as(request, "users.create", f"users:{user.id}", roles=list(user.roles))
        return Envelope(user_out(user))

    @put("/{user_id:str}", status_code=HTTP_200_OK, summary="Update a user")
    async def update(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        user_id: FromPath[str],
        data: JSONBody[UserUpdate],
    ) -> Envelope[str]:
        await check(request, principal, "update", f"users:{user_id}")
        service = services(state)
        user = await store.get_user(service.db, user_id)
        changes = UserChanges(
            username=data.username,
            email=data.email,
            roles=None if data.roles is None else tuple(dict.fromkeys(data.roles)),
            enabled=data.enabled,
            must_change_password=data.must_change_password,
        )
        if user_id == principal.user_id and changes.enabled is False:
            raise Conflict("you cannot disable your own account")
        await _keep_an_admin(request, user, changes)
        if data.password is not None:
            username = user.username if changes.username is None else changes.username
            checked_password(service.settings, data.password, username, "password")
            changes = replace(changes, password_hash=await hash_password_async(data.password))
        own = user_id == principal.user_id and principal.via == "jwt"
        await store.update_user(
            service.db, user_id, changes, principal.credential_id if own else None
        )
        changed = sorted("password" if k == "password_hash" else k for k in changes.given())
        audit_as(request, "users.update", f"users:{user_id}", changed=changed)
        return Envelope("User updated successfully")

    @delete("/{user_id:str}", status_code=HTTP_200_OK, summary="Delete a user")
    async def remove(
        self, request: AnyRequest, state: State, principal: CurrentPrincipal, user_id: FromPath[str]
    ) -> Envelope[str]:
        await check(request, principal, "delete", f"users:{user_id}")
        if user_id == principal.user_id:
            raise Conflict("you cannot delete your own account")
        engine = services(state).db
        user = await store.get_user(engine, user_id)
        await _keep_an_admin(request, user, UserChanges(enabled=False))
        await store.delete_user(engine, user_id)
        return Envelope("User deleted successfully")


class ProfileController(Controller):
    """One's own account: reachable without any policy."""

    path = "/user"
    tags = ["users"]

    @get("/profile", opt={"tolerates": (MFA_PENDING,)}, summary="Your profile")
    async def profile(self, state: State, principal: CurrentPrincipal) -> Envelope[ProfileOut]:
        return Envelope(profile_out(await store.get_user(services(state).db, principal.user_id)))

    @put("/profile", summary="Change your email (with your current password)")
    async def update_profile(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        data: JSONBody[ProfileUpdate],
    ) -> Envelope[ProfileOut]:
        audit_as(request, "users.update_profile", f"users:{principal.user_id}")
        service = services(state)
        user = await store.get_user(service.db, principal.user_id)
        if data.username is not None and data.username != user.username:
            # Policies may name users (`user.username`): choosing one's own name would
            # choose one's policies.
            raise Forbidden(
                "only an administrator can change a username: ask one to rename you "
                f"(PUT /users/{principal.user_id})"
            )
        changes = UserChanges()
        if data.email and data.email != user.email:
            await _check_current_password(request, user, data.current_password, "an email")
            changes = UserChanges(email=data.email)
        await store.update_user(service.db, principal.user_id, changes)
        return Envelope(profile_out(await store.get_user(service.db, principal.user_id)))

    @put(
        "/password",
        opt={"tolerates": (MUST_CHANGE_PASSWORD,)},
        summary="Change your password",
    )
    async def change_password(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        data: JSONBody[PasswordChange],
    ) -> Envelope[str]:
        audit_as(request, "users.change_password", f"users:{principal.user_id}")
        service = services(state)
        user = await store.get_user(service.db, principal.user_id)
        await _check_current_password(request, user, data.current_password, "the password")
        if data.confirm_new_password is not None and data.confirm_new_password != data.new_password:
            raise InvalidInput("confirm_new_password: does not match new_password")
        if data.new_password == data.current_password:
            raise InvalidInput("new_password: must differ from the current password")
        checked_password(service.settings, data.new_password, user.username, "new_password")
        await store.update_user(
            service.db,
            principal.user_id,
            UserChanges(
                password_hash=await hash_password_async(data.new_password),
                must_change_password=False,
            ),
            # Every other session ends at once; the one changing the password goes on.
            principal.credential_id if principal.via == "jwt" else None,
        )
        return Envelope("Password updated successfully")
