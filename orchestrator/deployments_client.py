"""The Python client's deployments section (docs/deployments.md): seed 002's endpoints
through an `OrchestratorClient`'s connection, its errors (`ApiError`, `Unreachable`)
included.

    with OrchestratorClient(url, key) as client:
        deployments = Deployments(client)
        created = deployments.create({"app_name": "hello", "image": …, "port": 8080})
        deployments.status(created["id"])["replicas"]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import msgspec

from orchestrator.client import ApiError, OrchestratorClient
from orchestrator.http.envelope import ErrorBody

JSON = dict[str, Any]
#: (`list` is a method's name in the class.)
Rows = list[JSON]


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

    def follow_logs(self, ident: str, tail: int = 10) -> Iterator[JSON]:
        """The last `tail` lines of each replica, then each new one as written (from
        every replica, those it gains later too), until the caller stops iterating."""
        import httpx  # a command that follows logs needs it; `--help` does not

        http = self._client._http
        path = f"/deployments/{_id(ident)}/logs"
        params: dict[str, str | int] = {"tail": tail, "follow": "true"}
        try:
            with http.stream(
                "GET", path, params=params, timeout=httpx.Timeout(30, read=None)
            ) as response:
                if not response.is_success:
                    response.read()
                    try:
                        error = msgspec.json.decode(response.content, type=ErrorBody)
                    except msgspec.DecodeError:
                        raise ApiError(
                            response.text, "UNEXPECTED_RESPONSE", response.status_code
                        ) from None
                    raise ApiError(error.error, error.code, response.status_code, error.details)
                for line in response.iter_lines():
                    if line:
                        entry: JSON = msgspec.json.decode(line)
                        yield entry
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self._client.unreachable(self._client.base_url, str(exc)) from exc

    def domains(self, ident: str) -> Rows:
        found: Rows = self._call("GET", f"/deployments/{_id(ident)}/domains")["domains"]
        return found

    def add_domain(self, ident: str, domain: str) -> JSON:
        """Map `domain` (a host name, unique across deployments) to the deployment."""
        return self._call("POST", f"/deployments/{_id(ident)}/domains", json={"domain": domain})

    def remove_domain(self, ident: str, domain: str) -> JSON:
        """Remove a domain, named by its id or by itself."""
        return self._call("DELETE", f"/deployments/{_id(ident)}/domains/{_id(domain)}")

    def metrics(self, ident: str) -> JSON:
        """CPU, memory, network and restarts per replica, sampled from the engine."""
        found: JSON = self._call("GET", f"/deployments/{_id(ident)}/metrics")["metrics"]
        return found
