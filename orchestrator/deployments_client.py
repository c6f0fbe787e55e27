"""The Python client's deployments section (docs/deployments.md): seed 002's endpoints
through an `OrchestratorClient`'s connection, its errors (`ApiError`, `Unreachable`)
included.

    with OrchestratorClient(url, key) as client:
        deployments = Deployments(client)
        created = deployments.create({"app_name": "hello", "image": …, "port": 8080})
        deployments.status(created["id"])["replicas"]
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from orchestrator.client import OrchestratorClient

JSON = dict[str, Any]


def _id(value: str) -> str:
    return quote(value, safe="")


class Deployments:
    def __init__(self, client: OrchestratorClient) -> None:
        self._client = client

    def _call(self, method: str, path: str, **kwargs: Any) -> JSON:
        data: JSON = self._client._call(method, path, dict, **kwargs)
        return data

    def create(self, body: JSON) -> JSON:
        """Seed 002's body (`app_name`, `image`, `port`, `replicas`, `env_vars`,
        `health_check`, `resources`, `registry_auth`); the pending record."""
        return self._call("POST", "/deployments", json=body)

    def list(self, *, status: str | None = None, page: int = 1, limit: int = 10) -> JSON:
        return self._call(
            "GET", "/deployments", params={"status": status, "page": page, "limit": limit}
        )

    def find(self, name_or_id: str) -> JSON:
        """A deployment by id or by `app_name` (the caller's)."""
        page = 1
        while True:
            listing = self.list(page=page, limit=100)
            for item in listing["deployments"]:
                if name_or_id in (item["id"], item["app_name"]):
                    return self.get(item["id"])
            if page >= listing["pagination"]["total_pages"]:
                return self.get(name_or_id)
            page += 1

    def get(self, ident: str) -> JSON:
        return self._call("GET", f"/deployments/{_id(ident)}")

    def status(self, ident: str) -> JSON:
        return self._call("GET", f"/deployments/{_id(ident)}/status")

    def scale(self, ident: str, replicas: int) -> JSON:
        return self._call("PATCH", f"/deployments/{_id(ident)}/scale", json={"replicas": replicas})

    def update(self, ident: str, changes: JSON) -> JSON:
        return self._call("PUT", f"/deployments/{_id(ident)}", json=changes)

    def stop(self, ident: str) -> JSON:
        return self._call("POST", f"/deployments/{_id(ident)}/stop")

    def start(self, ident: str) -> JSON:
        return self._call("POST", f"/deployments/{_id(ident)}/start")

    def delete(self, ident: str) -> JSON:
        return self._call("DELETE", f"/deployments/{_id(ident)}")

    def logs(self, ident: str, tail: int = 100) -> JSON:
        return self._call("GET", f"/deployments/{_id(ident)}/logs", params={"tail": tail})
