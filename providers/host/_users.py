"""The `host_user` kind: the host's Linux accounts (policies: `host-users:<name>`).

Through the system's own tools (`useradd`, `usermod`, `userdel` from shadow-utils), with
argument lists and `--prefix`: the instance's `users.prefix` (default `/`) is the
directory whose `etc/passwd`, `etc/shadow` and `etc/group` they change, which is how the
tests leave the real /etc alone. Read from `<prefix>/etc/passwd`.

Passwords never reach a task: the API hashes one (SHA-512 crypt, `openssl passwd -6`,
the password on its standard input) before the work is submitted, so the stored params,
the argument lists and the logs only ever hold `password_hash`. System accounts (uid
below 1000) are never changed or removed.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec

from providers.base import (
    JSON,
    InvalidParams,
    Kind,
    Operation,
    PermanentProviderError,
    ProviderConfigError,
)

#: Debian's default NAME_REGEX, at most 32 characters.
USERNAME = r"^[a-z_][a-z0-9_-]{0,31}$"
Username = Annotated[str, msgspec.Meta(pattern=USERNAME, description="a Linux user name")]
GroupName = Annotated[str, msgspec.Meta(pattern=USERNAME)]
#: A crypt(3) hash: `$6$salt$…` (SHA-512), `$y$…` (yescrypt), `$5$…`.
PasswordHash = Annotated[str, msgspec.Meta(pattern=r"^\$(6|5|y|2b)\$[A-Za-z0-9./$]{8,200}$")]
FIRST_UID = 1000


class Nothing(msgspec.Struct, forbid_unknown_fields=True):
    """No parameters."""


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password_hash: PasswordHash
    #: Supplementary groups, which must exist.
    groups: list[GroupName] = []


class UserPassword(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password_hash: PasswordHash


class UserNamed(msgspec.Struct, forbid_unknown_fields=True):
    username: Username


KIND = Kind(
    "host_user",
    "host-users",
    (
        Operation("list", Nothing, mutates=False, summary="the host's accounts"),
        Operation("create", UserCreate, undo="delete", summary="add an account"),
        # Neither can be undone without keeping the old password hash: irreversible.
        Operation("reset_password", UserPassword, summary="set an account's password"),
        Operation("delete", UserNamed, summary="remove an account and its home"),
    ),
    key="username",
    summary="the host's Linux accounts",
)


@dataclass(frozen=True, slots=True)
class UsersConfig:
    prefix: Path = Path("/")
    shell: str = "/bin/bash"

    @classmethod
    def of(cls, table: object) -> UsersConfig:
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise ProviderConfigError("users must be a table")
        unknown = sorted(set(table) - {"prefix", "shell"})
        if unknown:
            raise ProviderConfigError(f"users: unknown settings {unknown}")
        prefix, shell = table.get("prefix", "/"), table.get("shell", "/bin/bash")
        if not isinstance(prefix, str) or not os.path.isabs(prefix):
            raise ProviderConfigError("users.prefix: an absolute directory")
        if not isinstance(shell, str) or not os.path.isabs(shell):
            raise ProviderConfigError("users.shell: an absolute path")
        return cls(Path(prefix), shell)

    def file(self, name: str) -> Path:
        return self.prefix / "etc" / name

    def options(self) -> list[str]:
        return [] if self.prefix == Path("/") else ["--prefix", str(self.prefix)]


def accounts(config: UsersConfig) -> list[JSON]:
    """Seed 000's fields (uid and gid as strings, as the seed shows them)."""
    found = []
    for line in config.file("passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) < 7 or not fields[0]:
            continue
        found.append(
            {
                "username": fields[0],
                "uid": fields[2],
                "gid": fields[3],
                "home": fields[5],
                "shell": fields[6],
                "system": not fields[2].isdigit() or int(fields[2]) < FIRST_UID,
            }
        )
    return found


def groups(config: UsersConfig) -> set[str]:
    return {
        line.split(":")[0]
        for line in config.file("group").read_text().splitlines()
        if line and not line.startswith("#")
    }


def account(config: UsersConfig, username: str) -> JSON | None:
    return next((a for a in accounts(config) if a["username"] == username), None)


def check(config: UsersConfig, struct: msgspec.Struct) -> None:
    """The live rules: a new name is free and its groups exist; a changed account is
    no system account. Raises `InvalidParams`."""
    name = getattr(struct, "username", None)
    if name is None:
        return
    if re.fullmatch(USERNAME[1:-1], name) is None:  # `$` lets a trailing newline in
        raise InvalidParams("username", f"{name!r} is not a Linux user name")
    found = account(config, name)
    if isinstance(struct, UserCreate):
        if found is not None:
            raise InvalidParams("username", f"user {name} already exists")
        missing = sorted(set(struct.groups) - groups(config))
        if missing:
            raise InvalidParams("groups", f"no such group: {', '.join(missing)}")
        return
    if found is None:
        raise InvalidParams("username", f"user {name} does not exist")
    if found["system"]:
        raise InvalidParams("username", f"{name} is a system account (uid {found['uid']})")


async def tool(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        message = err.decode(errors="replace").strip() or f"exit status {process.returncode}"
        raise PermanentProviderError(f"{argv[0]}: {message}")


async def create(config: UsersConfig, struct: UserCreate) -> None:
    argv = ["useradd", *config.options(), "--create-home", "--user-group"]
    argv += ["--shell", config.shell, "--password", struct.password_hash]
    if struct.groups:
        argv += ["--groups", ",".join(struct.groups)]
    await tool(*argv, "--", struct.username)


async def reset_password(config: UsersConfig, struct: UserPassword) -> None:
    await tool(
        "usermod", *config.options(), "--password", struct.password_hash, "--", struct.username
    )


async def delete(config: UsersConfig, struct: UserNamed) -> None:
    await tool("userdel", *config.options(), "--remove", "--", struct.username)


async def hash_password(password: str) -> str:
    """SHA-512 crypt of the password (`openssl passwd -6`, reading it on its standard
    input: never in an argument list)."""
    process = await asyncio.create_subprocess_exec(
        "openssl",
        "passwd",
        "-6",
        "-stdin",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    out, _ = await process.communicate(password.encode())
    if process.returncode != 0:
        raise PermanentProviderError("openssl could not hash the password")
    return out.decode().strip()
