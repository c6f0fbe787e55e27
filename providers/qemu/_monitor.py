"""QMP, QEMU's control protocol, through the `qemu.qmp` library (the QEMU project's own
asyncio client): connect to a VM's socket, run commands, disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

# Unix socket paths hold at most 107 bytes; a data directory can be deeper than that.
_MAX_SOCKET_PATH = 100

# The library logs each failed connection at ERROR; the caller reports what matters.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class MonitorError(Exception):
    """The VM's monitor did not answer (not running, or not responding)."""


@contextlib.contextmanager
def connectable(path: Path) -> Iterator[str]:
    """A path to connect to `path` by, short enough for a Unix socket: itself, or the
    same file reached through an open descriptor of its directory."""
    text = str(path)
    if len(text.encode()) <= _MAX_SOCKET_PATH:
        yield text
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def monitor(path: Path, patience: float = 10.0) -> AsyncIterator[QMPClient]:
    """A connected QMP client (capabilities negotiated), disconnected on exit."""
    client = QMPClient(path.parent.name)
    try:
        with connectable(path) as where:
            async with asyncio.timeout(patience):
                await client.connect(where)
    except (QMPError, OSError, EOFError, TimeoutError) as exc:
        raise MonitorError(f"QMP at {path}: {exc or type(exc).__name__}") from exc
    try:
        yield client
    finally:
        with contextlib.suppress(QMPError, OSError, EOFError):
            await client.disconnect()


async def execute(path: Path, command: str, patience: float = 10.0) -> Any:
    """One command's answer; `MonitorError` when the VM does not give it."""
    async with monitor(path, patience) as client:
        try:
            async with asyncio.timeout(patience):
                return await client.execute(command)
        except (QMPError, OSError, EOFError, TimeoutError) as exc:
            raise MonitorError(f"QMP {command}: {exc or type(exc).__name__}") from exc
