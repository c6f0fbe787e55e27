"""The deployments and containers routes (orchestrator.api.deployments, .containers) as
the guard names them."""

from __future__ import annotations


#: The guard's table (orchestrator.api.security.ENDPOINTS): action, resource kind, and
#: the path parameter naming the deployment, for each route, as `/deployments…` and
#: `/v1/deployments…` (`/api/v1` is stripped by the guard itself).
def endpoints() -> dict[tuple[str, str], tuple[str, str, str | None]]:
    routes = {
        ("POST", "/deployments"): ("create", "deployments", None),
        ("GET", "/deployments"): ("list", "deployments", None),
        ("GET", "/deployments/{deployment_id}"): ("read", "deployments", "deployment_id"),
        ("PUT", "/deployments/{deployment_id}"): ("update", "deployments", "deployment_id"),
        ("DELETE", "/deployments/{deployment_id}"): ("delete", "deployments", "deployment_id"),
        ("PATCH", "/deployments/{deployment_id}/scale"): ("update", "deployments", "deployment_id"),
        ("POST", "/deployments/{deployment_id}/stop"): ("update", "deployments", "deployment_id"),
        ("POST", "/deployments/{deployment_id}/start"): ("update", "deployments", "deployment_id"),
        ("GET", "/deployments/{deployment_id}/status"): ("read", "deployments", "deployment_id"),
        ("GET", "/deployments/{deployment_id}/logs"): ("read", "deployments", "deployment_id"),
        ("GET", "/deployments/{deployment_id}/logs/stream"): (
            "read",
            "deployments",
            "deployment_id",
        ),
        ("GET", "/deployments/{deployment_id}/metrics"): ("read", "deployments", "deployment_id"),
        ("GET", "/deployments/{deployment_id}/domains"): ("read", "deployments", "deployment_id"),
        ("POST", "/deployments/{deployment_id}/domains"): (
            "update",
            "deployments",
            "deployment_id",
        ),
        ("DELETE", "/deployments/{deployment_id}/domains/{domain_id}"): (
            "update",
            "deployments",
            "deployment_id",
        ),
    }
    #: Seed 002's notifications socket: deployment events, each user's own.
    notifications = {("GET", "/v1/ws/notifications"): ("list", "deployments", None)}
    seed_000 = {
        ("GET", "/containers"): ("list", "containers", None),
        ("GET", "/containers/{container_id}"): ("read", "containers", "container_id"),
        ("GET", "/containers/{container_id}/logs"): ("read", "containers", "container_id"),
        ("GET", "/docker/ps"): ("list", "docker", None),
        ("POST", "/docker/containers"): ("create", "docker", None),
        ("POST", "/docker/containers/{container_id}/start"): ("start", "docker", "container_id"),
        ("POST", "/docker/containers/{container_id}/stop"): ("stop", "docker", "container_id"),
        ("DELETE", "/docker/containers/{container_id}"): ("delete", "docker", "container_id"),
        ("POST", "/docker/images/pull"): ("pull", "docker", None),
    }
    return {
        **routes,
        **{(m, f"/v1{p}"): v for (m, p), v in routes.items()},
        **seed_000,
        **notifications,
    }
