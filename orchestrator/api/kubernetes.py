"""Kubernetes apply (seed 000) under `/api/v1` (and unprefixed): a thin adapter over the
`kubernetes` provider type (docs/deployments.md, "Kubernetes apply").

`POST /kubernetes/pods|deployments|services` takes one object as JSON or YAML
(`application/yaml`, `text/yaml`), checks it (422 naming the field) and applies it as a
one-task workflow: created or updated by kind, namespace and name, or left `unchanged`
when it is already so. The answer waits for the workflow up to `server.wait_timeout`
(201 created, 200 configured or unchanged, 202 still running). `GET` lists what the
backend has; `GET /kubernetes/crds` the cluster's CRDs.

YAML is read with the safe loader within the request limits, and a manifest may expand
to at most `MAX_NODES` nodes (anchors and aliases counted as what they stand for): a
billion-laughs body is a 422 at once. No `kubernetes` instance, or one whose cluster or
podman does not answer: 503 `KUBERNETES_NOT_INSTALLED`; podman and a Service: the same,
saying what podman runs.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from orchestrator.api.batch import JSON_TYPES, UnsupportedMediaType
from orchestrator.api.controllers import orchestrator_of, security_of
from orchestrator.api.security import user_of
from orchestrator.errors import DomainError, InvalidInput, ProviderFailed
from orchestrator.http.envelope import Envelope, ErrorBody
from orchestrator.http.limits import REQUEST_BODY, YAML_TYPES, BadBody, BodyLimits, load_yaml
from orchestrator.service import Orchestrator
from orchestrator.specs import WorkflowSpec
from orchestrator.store.workflows import get_workflow, list_tasks
from providers.base import InvalidParams
from providers.kubernetes import KubernetesUnavailable
from providers.kubernetes._manifest import Deployment, Pod, Service, check, ref_of

#: The most nodes a YAML manifest may expand to (a Deployment of a few containers has
#: a few hundred).
MAX_NODES = 10_000
MEDIA = ("application/json", "application/yaml", "text/yaml")
SERVICES_ON_PODMAN = (
    "Services need a Kubernetes cluster: podman kube play runs Pods and Deployments "
    "only (publish a container's port with `hostPort` in its pod spec), so configure "
    "`kubeconfig` on the kubernetes provider instance for Services"
)


class KubernetesNotInstalled(DomainError):
    status_code = 503
    code = "KUBERNETES_NOT_INSTALLED"


KUBERNETES_ERRORS = {
    503: ResponseSpec(
        data_container=ErrorBody,
        description="Service Unavailable: `code` KUBERNETES_NOT_INSTALLED (no cluster "
        "configured and no podman answering, or a kind podman does not run)",
        generate_examples=False,
    ),
}


def decode_manifest(body: bytes, content_type: str, limits: BodyLimits) -> Any:
    """The object a JSON or YAML body holds (YAML: the safe loader, limited)."""
    media = content_type.split(";")[0].strip().lower()
    if media in YAML_TYPES:
        return load_yaml(body, BodyLimits(limits.depth, min(limits.nodes, MAX_NODES)))
    if media in JSON_TYPES:
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise BadBody(f"the request body could not be decoded: {exc}") from None
    raise UnsupportedMediaType(
        f"content type '{media}' is not accepted; send application/json or application/yaml"
    )


class Kubernetes:
    """The configured `kubernetes` instance, its reads and its applies."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.catalog = orchestrator.catalog
        doing = self.catalog.doing("manifest", "apply")
        if not doing:
            raise KubernetesNotInstalled(
                "Kubernetes is not configured: add a provider instance of type 'kubernetes' "
                "(a cluster's kubeconfig, or podman's socket: docs/deployments.md)"
            )
        self.instance = doing[0]

    async def read(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        declared = self.catalog.lookup(self.instance, "manifest", operation)
        try:
            return await self.orchestrator.read(declared, params)
        except ProviderFailed as exc:
            if isinstance(exc.__cause__, KubernetesUnavailable):
                raise KubernetesNotInstalled(str(exc.__cause__)) from None
            raise

    async def apply(
        self, request: Request[Any, Any, Any], path: str, manifest: dict[str, Any]
    ) -> Response[Envelope[Any]]:
        status = await self.read("status", {})  # 503 before any work is submitted
        if path == "services" and status.get("backend") == "podman":
            raise KubernetesNotInstalled(SERVICES_ON_PODMAN)
        ref = ref_of(manifest)
        params = {"ref": ref, "manifest": manifest}
        task = self.catalog.task(
            self.instance,
            "manifest",
            "apply",
            name=f"apply {ref}"[:200],
            params=params,
            origin="body",
        )
        spec = WorkflowSpec(
            kind="kubernetes", name=f"apply {ref}"[:200], tasks=[task], request={"ref": ref}
        )
        await security_of(request).authorize_items(request.scope, self.catalog.items(spec))
        orchestrator = self.orchestrator
        workflow_id = await orchestrator.submit(spec, owner=user_of(request.scope))
        await orchestrator.wait(workflow_id, orchestrator.settings.server.wait_timeout)
        workflow = await get_workflow(orchestrator.engine, workflow_id)
        state = workflow["status"] if workflow else "Pending"
        headers = {"Location": f"/tasks/{workflow_id}", "X-Workflow-Status": state}
        if state in ("Failed", "Cancelled", "RolledBack"):
            raise ProviderFailed(
                (workflow or {}).get("error") or f"apply {ref} failed",
                {"workflow_id": workflow_id, "ref": ref},
            )
        if state != "Completed":
            return Response(
                Envelope({"ref": ref, "workflow_id": workflow_id, "status": state}),
                status_code=HTTP_202_ACCEPTED,
                headers=headers,
            )
        tasks, _ = await list_tasks(
            orchestrator.engine, status=None, workflow_id=workflow_id, limit=1, offset=0
        )
        result = dict((tasks[0].get("result") if tasks else None) or {})
        result.pop("undo", None)  # the manifest it replaced: the rollback's, not the caller's
        _, namespace, name = ref.split("/", 2)
        outcome = result.get("outcome", "")
        return Response(
            Envelope(
                {
                    **result,
                    "kind": manifest.get("kind"),
                    "namespace": namespace,
                    "name": name,
                    "changed": outcome != "unchanged",
                    "workflow_id": workflow_id,
                }
            ),
            status_code=HTTP_201_CREATED if outcome == "created" else HTTP_200_OK,
            headers=headers,
        )


async def _apply(state: State, request: Request[Any, Any, Any], path: str) -> Response[Any]:
    orchestrator = orchestrator_of(state)
    raw = await anyio.to_thread.run_sync(
        partial(
            decode_manifest,
            await request.body(),
            request.headers.get("content-type", ""),
            BodyLimits.of(orchestrator.settings.server),
        )
    )
    try:
        check(raw, path)
    except InvalidParams as exc:
        raise InvalidInput(f"{exc.path}: {exc.message}" if exc.path else exc.message) from None
    return await Kubernetes(orchestrator).apply(request, path, raw)


async def _list(state: State, what: str) -> Envelope[dict[str, Any]]:
    found = await Kubernetes(orchestrator_of(state)).read("list", {"what": what})
    return Envelope(found)


class KubernetesController(Controller):
    path = "/kubernetes"
    tags = ["kubernetes"]

    @get("/pods", summary="Every pod, in every namespace (seed 000)", responses=KUBERNETES_ERRORS)
    async def pods(self, state: State) -> Envelope[dict[str, Any]]:
        return await _list(state, "pods")

    @post(
        "/pods",
        status_code=HTTP_200_OK,
        summary="Create or update a Pod (apply; JSON or YAML)",
        responses=KUBERNETES_ERRORS,
        opt={REQUEST_BODY: (Pod, MEDIA)},
    )
    async def apply_pod(self, state: State, request: Request[Any, Any, Any]) -> Response[Any]:
        return await _apply(state, request, "pods")

    @get("/deployments", summary="Every deployment", responses=KUBERNETES_ERRORS)
    async def deployments(self, state: State) -> Envelope[dict[str, Any]]:
        return await _list(state, "deployments")

    @post(
        "/deployments",
        status_code=HTTP_200_OK,
        summary="Create or update a Deployment (apply; JSON or YAML)",
        responses=KUBERNETES_ERRORS,
        opt={REQUEST_BODY: (Deployment, MEDIA)},
    )
    async def apply_deployment(
        self, state: State, request: Request[Any, Any, Any]
    ) -> Response[Any]:
        return await _apply(state, request, "deployments")

    @get("/services", summary="Every Service", responses=KUBERNETES_ERRORS)
    async def services(self, state: State) -> Envelope[dict[str, Any]]:
        return await _list(state, "services")

    @post(
        "/services",
        status_code=HTTP_200_OK,
        summary="Create or update a Service (apply; JSON or YAML; a cluster only)",
        responses=KUBERNETES_ERRORS,
        opt={REQUEST_BODY: (Service, MEDIA)},
    )
    async def apply_service(self, state: State, request: Request[Any, Any, Any]) -> Response[Any]:
        return await _apply(state, request, "services")

    @get("/crds", summary="The cluster's custom resource definitions", responses=KUBERNETES_ERRORS)
    async def crds(self, state: State) -> Envelope[dict[str, Any]]:
        return await _list(state, "crds")
