"""A QEMU process as Linux sees it: who it is (pid and start time), and waiting for its end.

A VM's QEMU is never the orchestrator's child (it daemonizes, in a session of its own),
so it is found again by pid *and* start time (clock ticks since boot, from /proc): a pid
reused by another process after a reboot or a long time is not mistaken for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot); None if gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def is_alive(pid: int, ticks: int) -> bool:
    return start_ticks(pid) == ticks


async def wait_gone(pid: int, ticks: int, patience: float) -> bool:
    """Wait up to `patience` seconds for that process to end; True once it has.

    A pidfd (Linux 5.3) wakes the loop when it ends; without one, /proc is polled."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        pidfd = -1
    try:
        if not is_alive(pid, ticks):  # checked once the pidfd pins the process
            return True
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        if pidfd >= 0:

            def readable() -> None:
                if not ended.done():
                    ended.set_result(None)

            loop.add_reader(pidfd, readable)
        try:
            async with asyncio.timeout(patience):
                if pidfd >= 0:
                    await ended
                else:
                    for _ in range(int(patience / 0.05) + 1):
                        if not is_alive(pid, ticks):
                            break
                        await asyncio.sleep(0.05)
        except TimeoutError:
            pass
        finally:
            if pidfd >= 0:
                loop.remove_reader(pidfd)
        return not is_alive(pid, ticks)
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def kill(pid: int, ticks: int) -> None:
    """SIGKILL that process (not a later one with its pid)."""
    if is_alive(pid, ticks):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
