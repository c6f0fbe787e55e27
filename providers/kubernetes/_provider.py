"""The `kubernetes` provider type: Kubernetes objects applied to a cluster, or to the
local podman with `podman kube play` when no cluster is configured (docs/deployments.md,
"Kubernetes apply").

Config (`[providers.<name>]`, `type = "kubernetes"`):

- `kubeconfig`: a kubeconfig file; when set, objects go to that cluster (server-side
  apply, `providers.kubernetes._cluster`), with `context` (default: the file's current
  one) and `field_manager` (default `provisioning`);
- else podman (`providers.kubernetes._podman`): `socket` (default as the `containers`
  type's: `DOCKER_HOST` when it is `unix://…`, else `/run/podman/podman.sock`),
  `network` (default `slirp4netns`) and `publish_ip` (default `127.0.0.1`), where a
  `hostPort` without a `hostIP` is published.

Kinds (`_kinds`): one, `manifest`, whose items policies name `kubernetes:<ref>`
(`kubernetes:pod/default/web`). `apply` creates or updates an object by kind, namespace
and name; its undo, `restore`, puts back the manifest it replaced or removes what it
created. `list` and `status` only read.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, Literal

import msgspec

from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    BaseProvider,
    InvalidParams,
    Kind,
    Operation,
    PermanentProviderError,
    ProviderConfigError,
    ResourceChange,
)
from providers.kubernetes._backend import Backend
from providers.kubernetes._manifest import (
    BackendStatus,
    ManifestApply,
    ManifestList,
    ManifestRestore,
    consistent,
    ref_of,
)

KINDS: tuple[Kind, ...] = (
    Kind(
        "manifest",
        "kubernetes",
        (
            Operation(
                "apply",
                ManifestApply,
                undo="restore",
                summary="create or update a Pod, Deployment or Service by namespace and name",
            ),
            Operation(
                "restore",
                ManifestRestore,
                undo="restore",
                summary="put an object back as a manifest, or remove it",
            ),
            Operation("list", ManifestList, mutates=False, summary="pods, deployments, …"),
            Operation("status", BackendStatus, mutates=False, summary="the backend in use"),
        ),
        key="ref",
        summary="a Kubernetes object (seed 000)",
    ),
)
_SETTINGS = {"kubeconfig", "context", "field_manager", "socket", "network", "publish_ip"}


def default_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else "/run/podman/podman.sock"


class KubernetesProvider(BaseProvider):
    """Kubernetes objects on a cluster or on podman (see the module's docstring)."""

    type_name: ClassVar[str] = "kubernetes"
    kinds: ClassVar[tuple[Kind, ...]] = KINDS

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        unknown = sorted(set(config) - _SETTINGS - {"type"})
        if unknown:
            raise ProviderConfigError(f"unknown settings {unknown}; known: {sorted(_SETTINGS)}")
        self.backend: Backend
        #: Applies and restores of one object, one at a time (in this process): podman
        #: replaces pods, and two replacements interleaved would leave both halves.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        kubeconfig = config.get("kubeconfig")
        if kubeconfig:
            from providers.kubernetes._cluster import ClusterBackend

            context = config.get("context")
            self.backend = ClusterBackend(
                str(kubeconfig),
                str(context) if context else None,
                str(config.get("field_manager", "provisioning")),
            )
        else:
            from providers.kubernetes._podman import PodmanBackend

            self.backend = PodmanBackend(
                str(config.get("socket") or default_socket()),
                name,
                str(config.get("network", "slirp4netns")),
                str(config.get("publish_ip", "127.0.0.1")),
            )

    def validate(self, kind: str, operation: str, params: Mapping[str, Any]) -> msgspec.Struct:
        struct = super().validate(kind, operation, params)
        if isinstance(struct, ManifestApply):
            consistent(struct.manifest)
        manifest = params.get("manifest")
        if isinstance(struct, ManifestApply | ManifestRestore) and isinstance(manifest, dict):
            # The object changed is the one the policies were asked about.
            ref = ref_of(manifest)
            if struct.ref != ref:
                raise InvalidParams("ref", f"the manifest names {ref}, not {struct.ref}")
        return struct

    async def apply(self, call: ActionCall) -> ActionResult:
        _, operation = self.declared(call)
        if operation.name in ("apply", "restore"):
            async with self._locks[str(call.params["ref"])]:
                if operation.name == "apply":
                    return await self._apply(call)
                return await self._restore(call)
        if operation.name == "list":
            what = str(call.params["what"])
            return ActionResult(
                result={what: await self.backend.list(what), "backend": self.backend.name}
            )
        return ActionResult(result=await self.backend.status())

    async def _apply(self, call: ActionCall) -> ActionResult:
        ref, manifest = str(call.params["ref"]), dict(call.params["manifest"])
        recorded = await call.inventory.get("manifest", ref)
        applied = await self.backend.apply(manifest, (recorded or {}).get("manifest"))
        result: JSON = {
            "ref": ref,
            "outcome": applied.outcome,
            "backend": self.backend.name,
            "object": applied.object,
        }
        if applied.outcome == "unchanged":
            return ActionResult(output=f"{ref} unchanged", result=result)
        result["undo"] = {"ref": ref, "manifest": applied.undo}
        data = {"manifest": manifest, "backend": self.backend.name}
        op: Literal["create", "update"] = "create" if applied.outcome == "created" else "update"
        return ActionResult(
            output=f"{ref} {applied.outcome} ({self.backend.name})",
            result=result,
            resources=(ResourceChange("manifest", ref, op, data=data),),
            reversible=applied.reversible,
        )

    async def _restore(self, call: ActionCall) -> ActionResult:
        ref = str(call.params["ref"])
        manifest = call.params.get("manifest")
        previous = await call.inventory.get("manifest", ref)
        found = await self.backend.restore(ref, dict(manifest) if manifest else None)
        undo = {"ref": ref, "manifest": (previous or {}).get("manifest")}
        if not manifest:
            return ActionResult(
                output=f"{ref} removed",
                result={"ref": ref, "outcome": "removed", "undo": undo},
                resources=(ResourceChange("manifest", ref, "delete"),),
            )
        data = {"manifest": manifest, "backend": self.backend.name}
        return ActionResult(
            output=f"{ref} restored",
            result={"ref": ref, "outcome": "restored", "object": found, "undo": undo},
            resources=(ResourceChange("manifest", ref, "update", data=data),),
        )

    async def compensate(self, call: ActionCall, applied: ActionResult) -> ActionResult:
        """Undone with what the apply recorded (`result.undo`): the manifest it replaced,
        or none (it created the object: removed)."""
        if not applied.resources:
            return ActionResult(output="nothing to undo")
        if not applied.reversible:
            raise PermanentProviderError(
                f"irreversible: {call.params.get('ref')} replaced an object this product had "
                "not applied, whose manifest is unknown"
            )
        undo = applied.result.get("undo")
        if not isinstance(undo, dict):
            raise PermanentProviderError(f"irreversible: {call.action} recorded no undo")
        return await self.apply(replace(call, action="manifest.restore", params=undo))
