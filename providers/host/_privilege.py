"""Whether this process may change what an operation changes.

The kernel checks capabilities, not the user id: root without `CAP_NET_ADMIN` (a
container, `setpriv --bounding-set -net_admin`) cannot change an interface. So the
check reads the process's effective capabilities (`CapEff` in /proc/self/status), and
a refusal says which one is missing, before any work is accepted.
"""

from __future__ import annotations

from pathlib import Path

#: linux/capability.h
CAP_DAC_OVERRIDE = 1
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21

NAMES = {
    CAP_DAC_OVERRIDE: "CAP_DAC_OVERRIDE",
    CAP_NET_ADMIN: "CAP_NET_ADMIN",
    CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
}


def effective_capabilities(status: Path = Path("/proc/self/status")) -> int:
    """The effective capability set as a bit mask (0 where it cannot be read)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def missing(capability: int, what: str) -> str | None:
    """None when the process holds `capability`; else a message saying it cannot do
    `what` and why."""
    if effective_capabilities() >> capability & 1:
        return None
    return (
        f"the orchestrator's process lacks {NAMES.get(capability, capability)} (run it as "
        f"root with that capability) and so cannot {what}"
    )
