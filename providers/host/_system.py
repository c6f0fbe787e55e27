"""The `system` kind: what the host is and how loaded it is (read-only), from psutil.

psutil reads /proc and sysfs and already knows their quirks (the memory figures `free`
shows, CPU time deltas, counts of physical cores); the product's `/state/system/metrics`
uses it too.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import time

import msgspec
import psutil

from providers.base import JSON, Kind, Operation


class Nothing(msgspec.Struct, forbid_unknown_fields=True):
    """No parameters."""


KIND = Kind(
    "system",
    "system",
    (
        Operation(
            "summary",
            Nothing,
            mutates=False,
            summary="hostname, operating system, kernel, uptime, load",
        ),
        Operation("cpu", Nothing, mutates=False, summary="processors and their use"),
        Operation("memory", Nothing, mutates=False, summary="memory and swap use"),
    ),
    key=None,
    summary="the host's identity and load (read-only)",
)


def operating_system() -> str:
    """`Debian GNU/Linux 12 (bookworm)`, from os-release; else the kernel's name."""
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return platform.system()
    return release.get("PRETTY_NAME") or release.get("NAME") or platform.system()


def summary() -> JSON:
    return {
        "hostname": socket.gethostname(),
        "os": operating_system(),
        "kernel": platform.release(),
        "architecture": platform.machine(),
        #: Seconds since boot.
        "uptime": int(time.time() - psutil.boot_time()),
        "boot_time": int(psutil.boot_time()),
        "load_average": list(os.getloadavg()),
    }


def _model() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def cpu(sample: float = 0.2) -> JSON:
    """Use over a short sample (seconds): psutil compares two readings of /proc/stat."""
    per_cpu = psutil.cpu_percent(interval=sample, percpu=True)
    frequency = psutil.cpu_freq()
    times = psutil.cpu_times()
    return {
        "model": _model(),
        "count_logical": psutil.cpu_count(logical=True),
        "count_physical": psutil.cpu_count(logical=False),
        "usage_percent": round(sum(per_cpu) / len(per_cpu), 1) if per_cpu else 0.0,
        "per_cpu_percent": per_cpu,
        "frequency_mhz": None if frequency is None else round(frequency.current, 1),
        "times": {name: round(getattr(times, name), 2) for name in times._fields},
        "load_average": list(os.getloadavg()),
    }


def memory() -> JSON:
    virtual = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return {
        **{name: getattr(virtual, name) for name in virtual._fields},
        "swap": {name: getattr(swap, name) for name in ("total", "used", "free", "percent")},
    }


async def read(operation: str) -> JSON:
    reader = {"summary": summary, "cpu": cpu, "memory": memory}[operation]
    return await asyncio.to_thread(reader)
