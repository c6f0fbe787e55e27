"""The local backend: `podman kube play` through podman's own REST API (libpod) on the
service's unix socket, the same service the `containers` type drives.

Podman runs Pods and Deployments (a Deployment of N replicas is N pods named
`<name>-pod-<i>`); it has no Services, no CRDs and one namespace. What is applied is
told apart by labels this backend adds to the pods (`provisioning.kind`, `.name`,
`.namespace`, `.manifest`: the manifest's fingerprint, `.instance`), so that:

- re-applying the same manifest finds pods with the same fingerprint and changes
  nothing (`unchanged`);
- a changed manifest replaces the pods (podman cannot update a pod in place): the old
  ones removed, the new manifest played; if the play fails, what it left is removed and
  the previous manifest played again;
- a name another namespace holds is refused (podman's pod names are global).

Ports are published as Kubernetes publishes them: only those with a `hostPort`, and
one without `hostIP` on `publish_ip` (loopback by default), not on every address
(podman itself would publish every `containerPort`, on all of them). The pods join
`network` (default `slirp4netns`: user-mode networking, no firewall rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import msgspec
import yaml

from providers.kubernetes._backend import Applied
from providers.kubernetes._errors import KubernetesRefused, KubernetesUnavailable, NameTaken
from providers.kubernetes._manifest import fingerprint, identity, split_ref
from providers.kubernetes._rows import age

JSON = dict[str, Any]
LABEL = "provisioning"
INSTANCE, KIND, NAME, NAMESPACE, MANIFEST, REPLICAS = (
    f"{LABEL}.instance",
    f"{LABEL}.kind",
    f"{LABEL}.name",
    f"{LABEL}.namespace",
    f"{LABEL}.manifest",
    f"{LABEL}.replicas",
)
#: The libpod API version asked for: 4.0 is the oldest podman 4 (Debian 12 has 4.3).
API = "http://podman/v4.0.0/libpod"
SERVICES_REFUSED = (
    "podman kube play runs Pods and Deployments, not Services: publish a container's "
    "port with `hostPort` in its pod spec, or configure a cluster (`kubeconfig`) for "
    "Services"
)


class PodmanBackend:
    name = "podman"

    def __init__(self, socket_path: str, instance: str, network: str, publish_ip: str) -> None:
        self.socket = socket_path
        self.instance = instance
        self.network = network
        self.publish_ip = publish_ip

    # -- the API ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.AsyncHTTPTransport(uds=self.socket)
        async with httpx.AsyncClient(
            transport=transport, base_url=API, timeout=600, trust_env=False
        ) as client:
            try:
                yield client
            except (httpx.TransportError, OSError) as exc:
                raise KubernetesUnavailable(
                    f"no Kubernetes cluster is configured and podman does not answer at "
                    f"{self.socket}: {exc or type(exc).__name__}"
                ) from exc

    async def _call(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, **kw: Any
    ) -> Any:
        async with self._client() as client:
            response = await client.request(method, path, params=params, **kw)
        if response.status_code == 404 and path in ("/info", "/pods/json"):
            raise KubernetesUnavailable(
                f"the engine at {self.socket} is not podman (no libpod API): kube play needs "
                "podman, or configure a cluster (`kubeconfig`)"
            )
        if response.status_code >= 400:
            raise KubernetesRefused(_message(response))
        return response.json() if response.content else None

    async def status(self) -> JSON:
        info = await self._call("GET", "/info")
        version = (info or {}).get("version", {}).get("Version", "")
        return {
            "backend": self.name,
            "version": version,
            "kinds": ["Pod", "Deployment"],
            "note": SERVICES_REFUSED,
        }

    async def pods(self) -> list[JSON]:
        found: list[JSON] = await self._call("GET", "/pods/json") or []
        return found

    async def containers(self) -> list[JSON]:
        found: list[JSON] = await self._call("GET", "/containers/json", params={"all": "true"})
        return found or []

    async def _remove(self, pods: list[JSON]) -> None:
        for pod in pods:
            with contextlib.suppress(KubernetesRefused):  # already gone
                await self._call("DELETE", f"/pods/{pod['Name']}", params={"force": "true"})

    async def _play(self, manifest: JSON) -> None:
        body = msgspec.json.encode(manifest)  # JSON is YAML
        report = await self._call(
            "POST",
            "/play/kube",
            params={"network": self.network, "start": "true"},
            content=body,
            headers={"Content-Type": "application/yaml"},
        )
        errors = [
            e for pod in (report or {}).get("Pods") or [] for e in pod.get("ContainerErrors") or []
        ]
        if errors:
            raise KubernetesRefused("; ".join(str(e) for e in errors))

    # -- apply --------------------------------------------------------------------------

    async def apply(self, manifest: JSON, recorded: JSON | None) -> Applied:
        """Create or replace the object (see the module's docstring); `recorded`: the
        manifest this product last applied for it, if any."""
        kind, namespace, name = identity(manifest)
        if kind == "Service":
            raise KubernetesRefused(SERVICES_REFUSED)
        owned = owned_pods(await self.pods(), kind, name)
        for pod in owned:
            other = (pod.get("Labels") or {}).get(NAMESPACE, namespace)
            if other != namespace:
                raise NameTaken(
                    f"{kind} {name} exists in namespace {other}: podman has one namespace, "
                    "so a name is used once"
                )
        wanted = fingerprint(manifest)
        if (
            owned
            and all((p.get("Labels") or {}).get(MANIFEST) == wanted for p in owned)
            and len(owned) == expected_pods(manifest)
        ):
            return Applied("unchanged", await self.describe(kind, namespace, name))
        previous, reversible = recorded, True
        if owned and previous is None:
            previous = await self._generated(owned) if kind == "Pod" else None
            reversible = previous is not None
        await self._remove(owned)
        try:
            await self._play(self.labelled(manifest))
        except (KubernetesRefused, asyncio.CancelledError) as exc:
            put_back = await asyncio.shield(self._undo_failed(kind, name, previous))
            if isinstance(exc, KubernetesRefused) and previous is not None:
                what = "was put back" if put_back else "could not be put back"
                raise KubernetesRefused(f"{exc} (the previous {kind} {what})") from exc
            raise
        return Applied(
            "configured" if owned else "created",
            await self.describe(kind, namespace, name),
            undo=previous,
            reversible=reversible,
        )

    async def _undo_failed(self, kind: str, name: str, previous: JSON | None) -> bool:
        """Remove what a failed play left; play the previous manifest again, if any.
        Whether that was done (its own failure must not hide the play's)."""
        try:
            await self._remove(owned_pods(await self.pods(), kind, name))
            if previous is not None:
                await self._play(self.labelled(previous))
        except (KubernetesRefused, KubernetesUnavailable):
            return False
        return True

    async def _generated(self, pods: list[JSON]) -> JSON | None:
        """An unrecorded pod as podman describes it (`podman kube generate`)."""
        async with self._client() as client:
            response = await client.get("/generate/kube", params={"names": pods[0]["Name"]})
        if response.status_code >= 400:
            return None
        loaded = yaml.safe_load(response.text)  # podman's own output
        return loaded if isinstance(loaded, dict) else None

    async def restore(self, ref: str, manifest: JSON | None) -> JSON:
        """Put an object back as `manifest` (None: remove it)."""
        kind, _, name = split_ref(ref)
        await self._remove(owned_pods(await self.pods(), kind, name))
        if manifest is None:
            return {"removed": ref}
        await self._play(self.labelled(manifest))
        _, namespace, _ = identity(manifest)
        return await self.describe(kind, namespace, name)

    def labelled(self, manifest: JSON) -> JSON:
        """The manifest played: this backend's labels on its pods, and every `hostPort`
        given an address (`publish_ip` unless the manifest names one)."""
        kind, namespace, name = identity(manifest)
        played: JSON = msgspec.json.decode(msgspec.json.encode(manifest))  # a deep copy
        labels = {
            INSTANCE: self.instance,
            KIND: kind,
            NAME: name,
            NAMESPACE: namespace,
            MANIFEST: fingerprint(manifest),
        }
        if kind == "Deployment":
            labels[REPLICAS] = str(expected_pods(manifest))
            template = played["spec"]["template"]
            meta, spec = template.setdefault("metadata", {}), template["spec"]
        else:
            meta, spec = played["metadata"], played["spec"]
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
        for container in spec.get("containers") or []:
            # Podman publishes a port without `hostPort` on the same port of every
            # address; Kubernetes publishes nothing for it, and neither does this.
            published = [p for p in container.get("ports") or [] if p.get("hostPort")]
            for port in published:
                port["hostIP"] = port.get("hostIP") or self.publish_ip
            if "ports" in container:
                container["ports"] = published
        return played

    # -- reads --------------------------------------------------------------------------

    async def describe(self, kind: str, namespace: str, name: str) -> JSON:
        pods = owned_pods(await self.pods(), kind, name)
        containers = await self.containers()
        rows = [pod_row(p, containers) for p in pods]
        if kind == "Pod":
            return rows[0] if rows else {"name": name, "namespace": namespace, "status": "Absent"}
        return deployment_row(name, namespace, pods, rows)

    async def list(self, what: str) -> list[JSON]:
        if what in ("services", "crds"):
            await self.status()  # it answers, and has none of them
            return []
        pods = await self.pods()
        if what == "pods":
            containers = await self.containers()
            return [pod_row(p, containers) for p in pods]
        containers = await self.containers()
        groups: dict[tuple[str, str], list[JSON]] = {}
        for pod in pods:
            labels = pod.get("Labels") or {}
            if labels.get(KIND) == "Deployment":
                key = (labels.get(NAMESPACE, "default"), labels.get(NAME, ""))
                groups.setdefault(key, []).append(pod)
        return [
            deployment_row(name, ns, group, [pod_row(p, containers) for p in group])
            for (ns, name), group in sorted(groups.items())
        ]


# -- pure pieces (unit-tested) ----------------------------------------------------------


def expected_pods(manifest: JSON) -> int:
    if manifest.get("kind") != "Deployment":
        return 1
    replicas = (manifest.get("spec") or {}).get("replicas", 1)
    return int(replicas if replicas is not None else 1)


def owned_pods(pods: list[JSON], kind: str, name: str) -> list[JSON]:
    """The pods of one object: labelled as its own, or, unlabelled (made outside this
    product), named as podman names them (`name`, or `<name>-pod-<i>` for a Deployment)."""
    pattern = re.compile(
        rf"{re.escape(name)}-pod-[0-9]+" if kind == "Deployment" else re.escape(name)
    )
    found = []
    for pod in pods:
        labels = pod.get("Labels") or {}
        if KIND in labels:
            if labels.get(KIND) == kind and labels.get(NAME) == name:
                found.append(pod)
        elif pattern.fullmatch(str(pod.get("Name", ""))):
            found.append(pod)
    return sorted(found, key=lambda p: str(p.get("Name")))


def pod_row(pod: JSON, containers: list[JSON]) -> JSON:
    """A pod in seed 000's shape (`name, namespace, status, ready, restarts, age, ip,
    node`), with its published ports."""
    mine = [c for c in containers if c.get("Pod") == pod.get("Id") and not c.get("IsInfra")]
    running = sum(1 for c in mine if c.get("State") == "running")
    ports = sorted(
        {
            (
                str(p.get("host_ip") or ""),
                int(p.get("host_port") or 0),
                int(p.get("container_port") or 0),
            )
            for c in mine
            for p in c.get("Ports") or []
        }
    )
    labels = pod.get("Labels") or {}
    return {
        "name": pod.get("Name", ""),
        "namespace": labels.get(NAMESPACE, "default"),
        "status": pod_phase(str(pod.get("Status", ""))),
        "ready": f"{running}/{len(mine)}",
        "restarts": sum(int(c.get("Restarts") or 0) for c in mine),
        "age": age(str(pod.get("Created", ""))),
        "ip": "",
        "node": socket.gethostname(),
        "labels": {k: v for k, v in labels.items() if not k.startswith(f"{LABEL}.")},
        "ports": [{"hostIP": h, "hostPort": hp, "containerPort": cp} for h, hp, cp in ports],
    }


def deployment_row(name: str, namespace: str, pods: list[JSON], rows: list[JSON]) -> JSON:
    labels = (pods[0].get("Labels") or {}) if pods else {}
    ready = sum(
        1
        for r in rows
        if r["status"] == "Running" and r["ready"].split("/")[0] == r["ready"].split("/")[1]
    )
    return {
        "name": name,
        "namespace": namespace,
        "ready": f"{ready}/{labels.get(REPLICAS, len(pods))}",
        "up_to_date": len(pods),
        "available": ready,
        "age": rows[0]["age"] if rows else "",
        "pods": rows,
    }


def pod_phase(status: str) -> str:
    """podman's pod status as a Kubernetes phase."""
    return {
        "Running": "Running",
        "Created": "Pending",
        "Exited": "Succeeded",
        "Degraded": "Running",
        "Dead": "Failed",
        "Error": "Failed",
    }.get(status, status or "Unknown")


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or f"podman answered {response.status_code}"
    text = body.get("message") if isinstance(body, dict) else None
    return str(text or f"podman answered {response.status_code}").removeprefix(
        "playing YAML file: "
    )
