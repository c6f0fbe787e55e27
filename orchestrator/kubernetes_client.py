"""The Python client's Kubernetes section (seed 000, docs/deployments.md): apply a
manifest, list what the backend runs, through an `OrchestratorClient`'s connection, its
errors (`ApiError`, `Unreachable`) included.

    with OrchestratorClient(url, key) as client:
        kube = Kubernetes(client)
        kube.apply(Path("pod.yaml").read_bytes(), "pods")["outcome"]  # created, …
        kube.list("pods")["pods"]
"""

from __future__ import annotations

from typing import Any

from orchestrator.client import OrchestratorClient

JSON = dict[str, Any]
#: What `apply` takes, by manifest kind: the API's path.
PATHS = {"Pod": "pods", "Deployment": "deployments", "Service": "services"}


class Kubernetes:
    def __init__(self, client: OrchestratorClient) -> None:
        self._client = client

    def apply(self, manifest: bytes, path: str, content_type: str = "application/yaml") -> JSON:
        """Create or update one object (`path`: pods, deployments or services) from its
        JSON or YAML; the outcome (`created`, `configured`, `unchanged`) and the object."""
        data: JSON = self._client._call(
            "POST",
            f"/api/v1/kubernetes/{path}",
            dict,
            content=manifest,
            headers={"Content-Type": content_type},
        )
        return data

    def list(self, what: str) -> JSON:
        """`pods`, `deployments`, `services` or `crds`, as the backend has them."""
        data: JSON = self._client._call("GET", f"/api/v1/kubernetes/{what}", dict)
        return data
