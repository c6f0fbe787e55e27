"""The cluster backend: a Kubernetes API server reached through a kubeconfig, with the
official `kubernetes` client (its dynamic client: any kind the server's discovery
lists), applying objects by server-side apply under one field manager.

- An apply reads the object first; after the apply, the same `resourceVersion` means
  the server changed nothing (`unchanged`), none before means `created`, else
  `configured`.
- Its undo puts back the manifest this product applied before (the inventory's), else
  the object as it was read (server-set fields dropped), else (it was created) deletes
  it. Server-side apply under the same field manager also removes the fields the
  restored manifest no longer sets.

The client is synchronous (urllib3): each call runs in a worker thread. The client
library is imported when the backend first connects, never by an orchestrator that has
no cluster configured.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import anyio.to_thread

from providers.kubernetes._backend import Applied
from providers.kubernetes._errors import KubernetesRefused, KubernetesUnavailable
from providers.kubernetes._manifest import identity, split_ref
from providers.kubernetes._rows import ROWS

JSON = dict[str, Any]
API_VERSIONS = {
    "Pod": "v1",
    "Deployment": "apps/v1",
    "Service": "v1",
}
LISTED = {
    "pods": ("v1", "Pod"),
    "deployments": ("apps/v1", "Deployment"),
    "services": ("v1", "Service"),
    "crds": ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
}
#: Set by the server: dropped from an object read back before it is applied again.
SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
)


class ClusterBackend:
    name = "cluster"

    def __init__(
        self,
        kubeconfig: str,
        context: str | None = None,
        field_manager: str = "provisioning",
        connect: Callable[[], Any] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.field_manager = field_manager
        self._connect = connect or self._dynamic_client
        self._client: Any = None

    def _dynamic_client(self) -> Any:
        from kubernetes import config
        from kubernetes.dynamic import DynamicClient

        try:
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=self.kubeconfig, context=self.context, persist_config=False
            )
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise KubernetesUnavailable(
                f"the kubeconfig {self.kubeconfig} cannot be used: {exc}"
            ) from exc
        return DynamicClient(api)  # type: ignore[no-untyped-call]

    def _dynamic(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    async def _run(self, call: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(self._guarded, call))

    def _guarded(self, call: Callable[[], Any]) -> Any:
        """Run one client call; its errors as the provider's."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError
        from urllib3.exceptions import HTTPError

        try:
            return call()
        except ResourceNotFoundError as exc:
            raise KubernetesRefused(f"the cluster does not serve this kind: {exc}") from exc
        except (DynamicApiError, ApiException) as exc:
            status = int(getattr(exc, "status", 0) or 0)
            message = _reason(exc)
            if status in (0, 502, 503, 504):
                raise KubernetesUnavailable(f"the cluster does not answer: {message}") from exc
            raise KubernetesRefused(f"the cluster refused it ({status}): {message}") from exc
        except (HTTPError, OSError) as exc:
            self._client = None  # connect again next time
            raise KubernetesUnavailable(f"the cluster does not answer: {exc}") from exc

    async def status(self) -> JSON:
        def version() -> JSON:
            found: JSON = (self._dynamic().version or {}).get("kubernetes") or {}
            return found

        found = await self._run(version)
        return {
            "backend": self.name,
            "version": found.get("gitVersion", ""),
            "kinds": ["Pod", "Deployment", "Service"],
        }

    # -- apply --------------------------------------------------------------------------

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._dynamic().resources.get(api_version=api_version, kind=kind)

    def _read(self, resource: Any, name: str, namespace: str) -> JSON | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            found: JSON = self._dynamic().get(resource, name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None
        return found

    def _apply(self, manifest: JSON) -> tuple[JSON | None, JSON]:
        kind, namespace, name = identity(manifest)
        resource = self._resource(str(manifest["apiVersion"]), kind)
        before = self._read(resource, name, namespace)
        after: JSON = (
            self._dynamic()
            .server_side_apply(
                resource,
                body=manifest,
                name=name,
                namespace=namespace,
                field_manager=self.field_manager,
                force_conflicts=True,
            )
            .to_dict()
        )
        return before, after

    async def apply(self, manifest: JSON, recorded: JSON | None) -> Applied:
        before, after = await self._run(functools.partial(self._apply, manifest))
        if before is None:
            return Applied("created", after, undo=None)
        if _version(before) == _version(after):
            return Applied("unchanged", after)
        return Applied("configured", after, undo=recorded or readable(before))

    async def restore(self, ref: str, manifest: JSON | None) -> JSON:
        kind, namespace, name = split_ref(ref)
        if manifest is not None:
            _, after = await self._run(functools.partial(self._apply, manifest))
            restored: JSON = after
            return restored

        def remove() -> None:
            from kubernetes.dynamic.exceptions import NotFoundError

            resource = self._resource(API_VERSIONS[kind], kind)
            with contextlib.suppress(NotFoundError):  # already gone
                self._dynamic().delete(resource, name=name, namespace=namespace)

        await self._run(remove)
        return {"removed": ref}

    async def list(self, what: str) -> list[JSON]:
        api_version, kind = LISTED[what]

        def items() -> list[JSON]:
            listed: JSON = self._dynamic().get(self._resource(api_version, kind)).to_dict()
            found: list[JSON] = listed.get("items") or []
            return found

        return [ROWS[what](item) for item in await self._run(items)]


def _version(obj: JSON) -> str | None:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return None if value is None else str(value)


def readable(obj: JSON) -> JSON:
    """An object read from the server as a manifest to apply again: no status, none of
    the fields the server sets."""
    out = {key: value for key, value in obj.items() if key != "status"}
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_FIELDS}
    annotations = {
        k: v
        for k, v in (metadata.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    out["metadata"] = metadata
    return out


def _reason(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            import json

            parsed = json.loads(body)
            if isinstance(parsed, dict) and parsed.get("message"):
                return str(parsed["message"])
        except (TypeError, ValueError):
            pass
    return str(getattr(exc, "reason", "") or exc)
