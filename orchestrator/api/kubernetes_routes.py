"""The Kubernetes routes (orchestrator.api.kubernetes) as the guard names them: each
object applied is authorized too, as `apply` on `kubernetes:<kind>/<namespace>/<name>`."""

from __future__ import annotations

#: The guard's table (orchestrator.api.security.ENDPOINTS): action, resource kind, and
#: the path parameter naming the item (none here).
ENDPOINTS: dict[tuple[str, str], tuple[str, str, str | None]] = {
    **{
        ("GET", f"/kubernetes/{what}"): ("list", "kubernetes", None)
        for what in ("pods", "deployments", "services", "crds")
    },
    **{
        ("POST", f"/kubernetes/{what}"): ("apply", "kubernetes", None)
        for what in ("pods", "deployments", "services")
    },
}
