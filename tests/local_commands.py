"""For tests that run `local` commands.

By default a command does not run as the orchestrator's user: as `provisioning-run`
when the tests run as root (`./dev setup` creates that user), in a bubblewrap sandbox
otherwise. Such a user cannot enter pytest's temporary directories (mode 0700), so the
directories these commands work in come from `open_directory`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pwd
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from providers.base import JSON, ActionCall, ProviderConfigError
from providers.local._isolation import Isolation

RUN_AS = "provisioning-run"


@contextmanager
def open_directory(prefix: str = "provisioning-test-") -> Iterator[Path]:
    """A new directory in the system's temporary directory that any user may write in,
    removed with what is in it at the end."""
    path = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
    try:
        path.chmod(0o777)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def why_not_isolated() -> str | None:
    """Why the default isolation of local commands cannot work on this host, if not."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"no user {RUN_AS!r} to run local commands as (`./dev setup` creates it)"
        return None
    return why_no_bwrap()


@functools.cache
def why_no_bwrap() -> str | None:
    """Why commands cannot run in a bubblewrap sandbox here (not installed, or this host
    forbids the namespaces it needs, as a container may), if they cannot."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (package bubblewrap)"
    try:
        Isolation.configure("bwrap", RUN_AS)
    except ProviderConfigError as exc:
        return str(exc)
    return None


def require_default_isolation() -> None:
    """Skip the test when the default isolation cannot work here, unless the suite runs
    under `./dev test`, which provides what it needs: then fail."""
    reason = why_not_isolated()
    if reason is None:
        return
    if os.environ.get("DEV_TEST"):
        pytest.fail(f"./dev test should have provided it: {reason}")
    pytest.skip(reason)


class NoInventory:
    async def get(self, kind: str, name: str) -> JSON | None:
        return None

    async def list(self, kind: str) -> list[JSON]:
        return []


def make_call(
    workspace: Path,
    task_id: str = "t1",
    action: str = "run",
    *,
    on_handle: Callable[[JSON], Awaitable[None]] | None = None,
    protected_paths: tuple[Path, ...] = (),
    **params: Any,
) -> ActionCall:
    return ActionCall(
        task_id=task_id,
        workflow_id="w1",
        instance="local",
        action=action,
        params=params,
        attempt=1,
        timeout=None,
        workspace=workspace,
        inventory=NoInventory(),
        on_handle=on_handle,
        protected_paths=protected_paths,
    )


def sh(script: str) -> dict[str, Any]:
    return {"command": "sh", "args": ["-c", script]}


def is_gone(pid: int) -> bool:
    """A pid that no longer runs: absent, or a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def start_time(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` holds; TimeoutError past `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def wait_for_file(path: Path, timeout: float = 5.0) -> str:
    await eventually(lambda: path.exists() and bool(path.read_text().strip()), timeout)
    return path.read_text().strip()


async def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    try:
        await eventually(lambda: is_gone(pid), timeout)
    except TimeoutError:
        return False
    return True
