"""What a Kubernetes manifest must hold before anything is applied: pure checks, no I/O.

Each object the API takes (a Pod, a Deployment, a Service) is checked against a struct
of the fields Kubernetes itself requires or constrains (names, images, ports, the
Deployment's selector), so a bad manifest is refused with the field's path
(`manifest.spec.containers[0].image`) before a backend sees it. Fields these structs do
not name pass through untouched: the manifest applied is the one given.

An object is named by its `ref`, `<kind>/<namespace>/<name>` (`pod/default/web`): the
inventory row's name and the policy resource's (`kubernetes:pod/default/web`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

import msgspec

from providers.base import InvalidParams

#: A DNS-1123 label: a namespace, a container's or a port's name, a Service's name.
Label = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length=63)]
#: A DNS-1123 subdomain: a Pod's or a Deployment's name.
Subdomain = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        max_length=253,
    ),
]
#: A label key (`app`, `example.com/tier`) and value, as Kubernetes allows them.
LabelKey = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
    ),
]
LabelValue = Annotated[
    str, msgspec.Meta(pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
]
Image = Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._/:@-]{0,254}$")]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]{0,254}$")]
Protocol = Literal["TCP", "UDP", "SCTP"]
Ref = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(pod|deployment|service)/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9][-a-z0-9.]{0,252}$",
        description="`<kind>/<namespace>/<name>`: pod/default/web",
    ),
]

#: The API's paths, the kind each takes, and its apiVersion.
KINDS: dict[str, tuple[str, str]] = {
    "pods": ("Pod", "v1"),
    "deployments": ("Deployment", "apps/v1"),
    "services": ("Service", "v1"),
}


class Meta(msgspec.Struct):
    name: Subdomain
    namespace: Label = "default"
    labels: dict[LabelKey, LabelValue] = {}


class TemplateMeta(msgspec.Struct):
    labels: dict[LabelKey, LabelValue] = {}


class ContainerPort(msgspec.Struct, rename="camel"):
    container_port: Port
    host_port: Port | None = None
    host_ip: str | None = None
    protocol: Protocol = "TCP"
    name: Label | None = None


class EnvVar(msgspec.Struct):
    name: EnvName
    value: Annotated[str, msgspec.Meta(max_length=32_768)] | None = None


class Container(msgspec.Struct):
    name: Label
    image: Image
    ports: list[ContainerPort] = []
    env: list[EnvVar] = []
    command: list[str] | None = None
    args: list[str] | None = None


class PodSpec(msgspec.Struct):
    containers: Annotated[list[Container], msgspec.Meta(min_length=1, max_length=64)]


class Pod(msgspec.Struct, tag_field="kind", tag="Pod", rename="camel"):
    api_version: Literal["v1"]
    metadata: Meta
    spec: PodSpec


class Selector(msgspec.Struct, rename="camel"):
    match_labels: Annotated[dict[LabelKey, LabelValue], msgspec.Meta(min_length=1)]


class PodTemplate(msgspec.Struct):
    metadata: TemplateMeta
    spec: PodSpec


class DeploymentSpec(msgspec.Struct):
    selector: Selector
    template: PodTemplate
    replicas: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 1


class Deployment(msgspec.Struct, tag_field="kind", tag="Deployment", rename="camel"):
    api_version: Literal["apps/v1"]
    metadata: Meta
    spec: DeploymentSpec


class ServicePort(msgspec.Struct, rename="camel"):
    port: Port
    target_port: Port | Label | None = None
    node_port: Port | None = None
    protocol: Protocol = "TCP"
    name: Label | None = None


class ServiceSpec(msgspec.Struct):
    ports: Annotated[list[ServicePort], msgspec.Meta(min_length=1)]
    selector: dict[LabelKey, LabelValue] = {}
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"


class Service(msgspec.Struct, tag_field="kind", tag="Service", rename="camel"):
    api_version: Literal["v1"]
    metadata: Meta
    spec: ServiceSpec


Object = Pod | Deployment | Service


class ManifestApply(msgspec.Struct, forbid_unknown_fields=True):
    """Apply one object: create it, or update the one of that kind, namespace and name."""

    ref: Ref
    manifest: Object


class ManifestRestore(msgspec.Struct, forbid_unknown_fields=True):
    """Put back an object as it was: `manifest` applied again, or None: it is removed."""

    ref: Ref
    manifest: dict[str, Any] | None = None


class ManifestList(msgspec.Struct, forbid_unknown_fields=True):
    what: Literal["pods", "deployments", "services", "crds"]


class BackendStatus(msgspec.Struct, forbid_unknown_fields=True):
    pass


def ref_of(manifest: dict[str, Any]) -> str:
    """`<kind>/<namespace>/<name>` of a manifest already checked by `check`."""
    metadata = manifest.get("metadata") or {}
    kind = str(manifest.get("kind", "")).lower()
    return f"{kind}/{metadata.get('namespace') or 'default'}/{metadata.get('name', '')}"


def identity(manifest: dict[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name) of a checked manifest."""
    metadata = manifest.get("metadata") or {}
    return (
        str(manifest.get("kind")),
        str(metadata.get("namespace") or "default"),
        str(metadata.get("name")),
    )


def split_ref(ref: str) -> tuple[str, str, str]:
    """(kind, namespace, name) of a ref (`pod/default/web` -> `Pod`, …)."""
    kind, namespace, name = ref.split("/", 2)
    return {"pod": "Pod", "deployment": "Deployment", "service": "Service"}[kind], namespace, name


def check(manifest: Any, path: str) -> Object:
    """The manifest as its struct, for the API path `path` (`pods`, …); raises
    `InvalidParams` naming the field (`manifest.spec.containers[0].image`)."""
    if not isinstance(manifest, dict):
        raise InvalidParams("manifest", "expected a Kubernetes object (a mapping)")
    kind, api_version = KINDS[path]
    if manifest.get("kind") != kind:
        raise InvalidParams(
            "manifest.kind",
            f"expected {kind!r} on /kubernetes/{path}, got {manifest.get('kind')!r}",
        )
    if manifest.get("apiVersion") != api_version:
        raise InvalidParams(
            "manifest.apiVersion",
            f"expected {api_version!r} for a {kind}, got {manifest.get('apiVersion')!r}",
        )
    try:
        obj: Object = msgspec.convert(manifest, Object)
    except msgspec.ValidationError as exc:
        raise _located(str(exc)) from None
    return consistent(obj)


def consistent(obj: Object) -> Object:
    """What the structs cannot say: unique container names, a selector matching its
    template, a Service's name a DNS label."""
    specs = (
        [obj.spec]
        if isinstance(obj, Pod)
        else [obj.spec.template.spec]
        if isinstance(obj, Deployment)
        else []
    )
    prefix = "manifest.spec" if isinstance(obj, Pod) else "manifest.spec.template.spec"
    for spec in specs:
        seen: set[str] = set()
        for index, container in enumerate(spec.containers):
            if container.name in seen:
                raise InvalidParams(
                    f"{prefix}.containers[{index}].name", f"{container.name!r} is used twice"
                )
            seen.add(container.name)
    if isinstance(obj, Deployment):
        wanted = obj.spec.selector.match_labels
        have = obj.spec.template.metadata.labels
        if any(have.get(key) != value for key, value in wanted.items()):
            raise InvalidParams(
                "manifest.spec.selector.matchLabels",
                "does not match spec.template.metadata.labels",
            )
    if isinstance(obj, Service) and (len(obj.metadata.name) > 63 or "." in obj.metadata.name):
        raise InvalidParams("manifest.metadata.name", "a Service's name is a DNS label (no dots)")
    return obj


def fingerprint(manifest: dict[str, Any]) -> str:
    """The same for the same manifest however its keys are ordered (32 hex digits)."""
    canonical = msgspec.json.encode(manifest, order="sorted")
    return hashlib.sha256(canonical).hexdigest()[:32]


#: msgspec's "… - at `$.spec.containers[0]`" and "… - at `key` in `$.metadata.labels`".
_AT = re.compile(r" - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$")
_MISSING = "Object missing required field `"


def _located(message: str) -> InvalidParams:
    """msgspec's error as a field path under `manifest`."""
    at = _AT.search(message)
    path = at["path"].removeprefix(".") if at else ""
    text = message[: at.start()] if at else message
    place = f"manifest.{path}" if path else "manifest"
    if text.startswith(_MISSING):
        return InvalidParams(f"{place}.{text.removeprefix(_MISSING).rstrip('`')}", "required")
    return InvalidParams(place, f"a key: {text}" if at and at["key"] else text)
