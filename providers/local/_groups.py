"""Process groups on Linux, through /proc: when one started, whether it is alive, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import TypeGuard

from providers.base import JSON

_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) from /proc, or None if gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2]), int(fields[19])


def boot_ticks() -> int | None:
    """Now, as /proc counts a process's start time: clock ticks since boot (Linux only)."""
    if _BOOTTIME is None:
        return None
    return time.clock_gettime_ns(_BOOTTIME) // (1_000_000_000 // _TICKS_PER_SECOND)


def start_window(handle: JSON) -> tuple[int, int] | None:
    window, exact = handle.get("started_between"), handle.get("start_time")
    if isinstance(window, list) and len(window) == 2 and all(is_int(t) for t in window):
        return window[0], window[1]
    return (exact, exact) if is_int(exact) else None


def group_members(pgid: int) -> list[int]:
    """Start times of the live (not zombie) processes in a process group."""
    if not os.path.isdir("/proc"):
        return []
    starts = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                starts.append(stat[2])
    return starts


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    return bool(group_members(pgid))  # zombies count as gone


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
