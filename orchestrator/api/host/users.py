"""Seed 000's host users (`/users` there; `/host/users` here, as `/users` belongs to the
control center) over the `host` provider's `host_user` kind.

The password in a body is hashed here, before anything is stored: the task holds
`password_hash` only (docs/host.md).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_202_ACCEPTED

from orchestrator.api.host.common import Change, ChangeOut, host_change, host_read
from orchestrator.api.host.network import Instance
from orchestrator.errors import InvalidInput
from orchestrator.http.envelope import Envelope
from providers.host._users import hash_password

#: 8 to 256 characters, no control characters (a newline, …).
Password = Annotated[
    str, msgspec.Meta(min_length=8, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
]
#: `wheel,docker` as the seed writes it, or a list.
Groups = Annotated[str, msgspec.Meta(max_length=1000)] | list[str]


class UsersOut(msgspec.Struct):
    #: username, uid, gid, home, shell (seed 000), and `system` (uid below 1000).
    users: list[dict[str, Any]]


class UserIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(max_length=64)]
    password: Password
    groups: Groups = []
    check_mode: bool = False
    wait: bool = False


class PasswordIn(msgspec.Struct, forbid_unknown_fields=True):
    password: Password
    check_mode: bool = False
    wait: bool = False


async def _hashed(password: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise InvalidInput("password: control characters (a newline, …) are not allowed")
    return await hash_password(password)


class HostUserController(Controller):
    path = "/host/users"
    tags = ["host"]

    @get("/", summary="The host's Linux accounts")
    async def list(self, state: State, instance: Instance = None) -> Envelope[UsersOut]:
        found = await host_read(state, "host_user", "list", {}, instance)
        return Envelope(UsersOut(users=found["users"]))

    @post("/", status_code=HTTP_202_ACCEPTED, summary="Add a Linux account")
    async def create(
        self, state: State, request: Request[Any, Any, Any], data: UserIn, instance: Instance = None
    ) -> Response[Envelope[ChangeOut]]:
        groups = data.groups.split(",") if isinstance(data.groups, str) else data.groups
        params = {
            "username": data.username,
            "password_hash": await _hashed(data.password),
            "groups": [g.strip() for g in groups if g.strip()],
        }
        return await host_change(
            state,
            request,
            "host_user",
            "create",
            params,
            Change(data.check_mode, data.wait),
            instance,
            f"create user {data.username}",
        )

    @post(
        "/{username:str}/reset-password",
        status_code=HTTP_202_ACCEPTED,
        summary="Set a Linux account's password",
    )
    async def reset_password(
        self,
        state: State,
        request: Request[Any, Any, Any],
        username: str,
        data: PasswordIn,
        instance: Instance = None,
    ) -> Response[Envelope[ChangeOut]]:
        params = {"username": username, "password_hash": await _hashed(data.password)}
        return await host_change(
            state,
            request,
            "host_user",
            "reset_password",
            params,
            Change(data.check_mode, data.wait),
            instance,
            f"reset the password of {username}",
        )

    @delete("/{username:str}", status_code=HTTP_202_ACCEPTED, summary="Remove a Linux account")
    async def remove(
        self,
        state: State,
        request: Request[Any, Any, Any],
        username: str,
        check_mode: bool = False,
        wait: bool = False,
        instance: Instance = None,
    ) -> Response[Envelope[ChangeOut]]:
        return await host_change(
            state,
            request,
            "host_user",
            "delete",
            {"username": username},
            Change(check_mode, wait),
            instance,
            f"delete user {username}",
        )
