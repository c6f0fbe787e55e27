"""How the guard names the host endpoints (`orchestrator.api.security.ENDPOINTS`):
(method, route) -> (action, policy resource kind, path parameter naming the item).

Changes name the operation on the item (`up` on `network:eth0`); reads `read`/`list` on
the area, which the default operator and viewer policies allow. Kept apart from the
controllers so the guard's table imports nothing of them.
"""

from __future__ import annotations

HOST_ENDPOINTS: dict[tuple[str, str], tuple[str, str, str | None]] = {
    ("GET", "/network/interfaces"): ("list", "network", None),
    ("PUT", "/network/interfaces/{name}/up"): ("up", "network", "name"),
    ("PUT", "/network/interfaces/{name}/down"): ("down", "network", "name"),
    ("POST", "/network/interfaces/{name}/address"): ("add_address", "network", "name"),
    ("DELETE", "/network/interfaces/{name}/address"): ("remove_address", "network", "name"),
    ("GET", "/system/summary"): ("read", "system", None),
    ("GET", "/system/cpu"): ("read", "system", None),
    ("GET", "/system/memory"): ("read", "system", None),
    ("GET", "/storage/disks"): ("list", "storage", None),
    # The device is in the body: as for `POST /providers/…`, the route is `apply` on
    # `providers:*` and each item is authorized (`format` on `storage:/dev/sdb`, `run`
    # on `host:<instance>`), so a grant on some devices works.
    ("POST", "/storage/format"): ("apply", "providers", None),
    ("POST", "/storage/mount"): ("apply", "providers", None),
    ("POST", "/storage/unmount"): ("apply", "providers", None),
    ("GET", "/host/users"): ("list", "host-users", None),
    ("POST", "/host/users"): ("apply", "providers", None),
    ("POST", "/host/users/{username}/reset-password"): (
        "reset_password",
        "host-users",
        "username",
    ),
    ("DELETE", "/host/users/{username}"): ("delete", "host-users", "username"),
    ("GET", "/logs"): ("read", "logs", None),
    ("GET", "/ws/metrics"): ("read", "system", None),
    ("GET", "/ws/logs"): ("read", "logs", None),
    # `/ws/terminal` checks its caller itself (`open` on `host:terminal`, admin, MFA:
    # `orchestrator.api.host.terminal`), so it is not in this table.
}
