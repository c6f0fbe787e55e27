"""The `kubernetes` provider type without a cluster or an engine: manifests checked with
their fields named, podman's labelled manifests and pods, and the cluster backend's
apply, undo and listings over a stand-in for the client's dynamic API (the real client
is exercised only as far as loading a kubeconfig: no cluster runs here)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError, api_exception
from urllib3.exceptions import MaxRetryError

from orchestrator.api.kubernetes import decode_manifest
from orchestrator.errors import InvalidInput
from orchestrator.http.limits import BodyLimits
from providers.base import JSON, ActionCall, ActionResult, InvalidParams
from providers.kubernetes import KubernetesProvider, KubernetesRefused, KubernetesUnavailable
from providers.kubernetes._cluster import ClusterBackend, readable
from providers.kubernetes._manifest import check, fingerprint, ref_of
from providers.kubernetes._podman import PodmanBackend, owned_pods, pod_row
from providers.kubernetes._rows import age, crd_row
from providers.kubernetes._rows import pod_row as cluster_pod_row

pytestmark = pytest.mark.backend_independent

POD: JSON = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {
        "containers": [
            {
                "name": "httpd",
                "image": "registry:5000/httpd:v2",
                "ports": [{"containerPort": 8080, "hostPort": 18080}, {"containerPort": 9090}],
                "resources": {"limits": {"cpu": "1"}},
            }
        ]
    },
}
DEPLOYMENT: JSON = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "hello"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "hello"}},
        "template": {"metadata": {"labels": {"app": "hello"}}, "spec": POD["spec"]},
    },
}
SERVICE: JSON = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "websvc", "namespace": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
}


def changed(base: JSON, path: str, value: Any) -> JSON:
    """A copy of `base` with the dotted `path` set (`[0]` indexes a list)."""
    out = copy.deepcopy(base)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        name, _, index = part.partition("[")
        node = node[name] if not index else node[name][int(index.rstrip("]"))]
    if value is None:
        node.pop(last)
    else:
        node[last] = value
    return out


# -- manifests --------------------------------------------------------------------------


def test_the_seed_objects_pass_and_are_named_by_kind_namespace_and_name():
    for manifest, path in ((POD, "pods"), (DEPLOYMENT, "deployments"), (SERVICE, "services")):
        check(manifest, path)
    assert [ref_of(m) for m in (POD, DEPLOYMENT, SERVICE)] == [
        "pod/default/web",
        "deployment/default/hello",
        "service/web/websvc",
    ]


@pytest.mark.parametrize(
    ("manifest", "path", "field"),
    [
        (
            changed(POD, "spec.containers[0].image", None),
            "pods",
            "manifest.spec.containers[0].image",
        ),
        (changed(POD, "metadata.name", "Web_1"), "pods", "manifest.metadata.name"),
        (changed(POD, "metadata.namespace", "a" * 64), "pods", "manifest.metadata.namespace"),
        (changed(POD, "spec.containers", []), "pods", "manifest.spec.containers"),
        (
            changed(POD, "spec.containers[0].ports", [{"containerPort": 0}]),
            "pods",
            "manifest.spec.containers[0].ports[0].containerPort",
        ),
        (
            changed(POD, "spec.containers[0].env", [{"name": "A=B", "value": "x"}]),
            "pods",
            "manifest.spec.containers[0].env[0].name",
        ),
        (
            changed(POD, "spec.containers", [POD["spec"]["containers"][0]] * 2),
            "pods",
            "manifest.spec.containers[1].name",
        ),
        (changed(POD, "metadata.labels", {"bad key!": "x"}), "pods", "manifest.metadata.labels"),
        (changed(POD, "kind", "ConfigMap"), "pods", "manifest.kind"),
        (POD, "deployments", "manifest.kind"),
        (changed(POD, "apiVersion", "apps/v1"), "pods", "manifest.apiVersion"),
        (changed(DEPLOYMENT, "spec.replicas", -1), "deployments", "manifest.spec.replicas"),
        (
            changed(DEPLOYMENT, "spec.selector.matchLabels", {"app": "other"}),
            "deployments",
            "manifest.spec.selector.matchLabels",
        ),
        (changed(DEPLOYMENT, "spec.template", None), "deployments", "manifest.spec.template"),
        (changed(SERVICE, "spec.ports", []), "services", "manifest.spec.ports"),
        (changed(SERVICE, "spec.type", "Magic"), "services", "manifest.spec.type"),
        (changed(SERVICE, "metadata.name", "web.svc"), "services", "manifest.metadata.name"),
        ([POD], "pods", "manifest"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_field(manifest, path, field):
    with pytest.raises(InvalidParams) as refused:
        check(manifest, path)
    assert refused.value.path == field, refused.value


def test_the_fingerprint_ignores_key_order_and_sees_any_change():
    reordered = dict(reversed(json.loads(json.dumps(POD, sort_keys=True)).items()))
    assert list(reordered) != list(POD)
    assert fingerprint(reordered) == fingerprint(POD)
    assert fingerprint(changed(POD, "metadata.labels", {"app": "web2"})) != fingerprint(POD)


def test_a_yaml_bomb_is_refused_before_it_expands():
    bomb = b'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n' + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 10)}]\n".encode()
        for i in range(8)
    )
    with pytest.raises(InvalidInput, match="nodes"):
        decode_manifest(bomb, "application/yaml", BodyLimits(depth=64, nodes=100_000))
    assert decode_manifest(json.dumps(POD).encode(), "application/json", BodyLimits(64, 10)) == POD


# -- podman -----------------------------------------------------------------------------


def test_podman_plays_the_manifest_labelled_with_ports_as_kubernetes_publishes_them():
    backend = PodmanBackend("/nowhere.sock", "kube", "slirp4netns", "127.0.0.1")
    original = copy.deepcopy(DEPLOYMENT)
    played = backend.labelled(DEPLOYMENT)
    assert original == DEPLOYMENT  # the manifest given is left as it is
    labels = played["spec"]["template"]["metadata"]["labels"]
    assert labels["app"] == "hello"
    assert labels["provisioning.kind"] == "Deployment"
    assert labels["provisioning.name"] == "hello"
    assert labels["provisioning.namespace"] == "default"
    assert labels["provisioning.replicas"] == "2"
    assert labels["provisioning.manifest"] == fingerprint(DEPLOYMENT)
    ports = played["spec"]["template"]["spec"]["containers"][0]["ports"]
    # 9090 had no hostPort: podman would publish it on every address; dropped.
    assert ports == [{"containerPort": 8080, "hostPort": 18080, "hostIP": "127.0.0.1"}]
    pod = backend.labelled(changed(POD, "spec.containers[0].ports[0].hostIP", "10.0.0.1"))
    assert pod["metadata"]["labels"]["provisioning.kind"] == "Pod"
    assert pod["spec"]["containers"][0]["ports"][0]["hostIP"] == "10.0.0.1"


def test_an_objects_pods_are_its_labelled_ones_or_unlabelled_ones_named_as_podman_names_them():
    pods = [
        {
            "Name": "hello-pod-0",
            "Labels": {"provisioning.kind": "Deployment", "provisioning.name": "hello"},
        },
        {"Name": "hello-pod-1", "Labels": {}},  # made outside the product
        {"Name": "hello-pod-x", "Labels": {}},
        {"Name": "hello", "Labels": {"provisioning.kind": "Pod", "provisioning.name": "hello"}},
        {
            "Name": "other-pod-0",
            "Labels": {"provisioning.kind": "Deployment", "provisioning.name": "hello2"},
        },
    ]
    assert [p["Name"] for p in owned_pods(pods, "Deployment", "hello")] == [
        "hello-pod-0",
        "hello-pod-1",
    ]
    assert [p["Name"] for p in owned_pods(pods, "Pod", "hello")] == ["hello"]


def test_a_podman_pod_is_shown_as_seed_000_lists_pods():
    pod = {
        "Id": "p1",
        "Name": "web",
        "Status": "Running",
        "Created": "2026-12-07T18:30:12.218717849Z",
        "Labels": {"app": "web", "provisioning.namespace": "team-a", "provisioning.kind": "Pod"},
    }
    containers = [
        {"Pod": "p1", "IsInfra": True, "State": "running", "Ports": []},
        {
            "Pod": "p1",
            "IsInfra": False,
            "State": "running",
            "Restarts": 2,
            "Ports": [{"host_ip": "127.0.0.1", "host_port": 18080, "container_port": 8080}],
        },
        {"Pod": "p1", "IsInfra": False, "State": "exited"},
        {"Pod": "p2", "IsInfra": False, "State": "running"},
    ]
    row = pod_row(pod, containers)
    assert {k: row[k] for k in ("name", "namespace", "status", "ready", "restarts")} == {
        "name": "web",
        "namespace": "team-a",
        "status": "Running",
        "ready": "1/2",
        "restarts": 2,
    }
    assert row["labels"] == {"app": "web"}
    assert row["ports"] == [{"hostIP": "127.0.0.1", "hostPort": 18080, "containerPort": 8080}]


def test_ages_read_as_kubectl_writes_them():
    from datetime import UTC, datetime

    now = datetime(2026, 12, 9, 12, 0, 0, tzinfo=UTC)
    assert age("2026-12-07T12:00:00Z", now) == "2d"
    assert age("2026-12-09T09:59:59.123456789Z", now) == "2h"
    assert age("2026-12-09T11:59:30+00:00", now) == "30s"
    assert age(None, now) == age("not a time", now) == ""


# -- the cluster backend, over a stand-in for the dynamic client -------------------------


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str


class Found:
    def __init__(self, data: JSON) -> None:
        self.data = data

    def to_dict(self) -> JSON:
        return copy.deepcopy(self.data)


class Resources:
    def get(self, *, api_version: str, kind: str) -> Resource:
        return Resource(api_version, kind)


class StandInCluster:
    """What `kubernetes.dynamic.DynamicClient` does that the backend uses, over a dict:
    server-side apply keeps a body as given, and moves `resourceVersion` only when the
    body differs from what is stored (as the API server does)."""

    version = {"kubernetes": {"gitVersion": "v1.31.0"}}

    def __init__(self) -> None:
        self.resources = Resources()
        self.objects: dict[tuple[str, str, str], JSON] = {}
        self.revision = 0
        self.applied: list[tuple[JSON, str, bool]] = []
        self.fail: Exception | None = None

    def _missing(self) -> NotFoundError:
        error = ApiException(status=404, reason="Not Found")
        return NotFoundError(error)

    def get(self, resource: Resource, name: str | None = None, namespace: str | None = None):
        if self.fail is not None:
            raise self.fail
        if name is None:
            items = [o for (k, _, _), o in self.objects.items() if k == resource.kind]
            return Found({"items": items})
        found = self.objects.get((resource.kind, namespace or "default", name))
        if found is None:
            raise self._missing()
        return Found(found)

    def server_side_apply(self, resource, body, name, namespace, field_manager, force_conflicts):
        if self.fail is not None:
            raise self.fail
        self.applied.append((body, field_manager, force_conflicts))
        key = (resource.kind, namespace, name)
        stored = self.objects.get(key)
        given = dict(body)
        if stored is None or _spec(stored) != _spec(given):
            self.revision += 1
            stored = {
                **given,
                "metadata": {
                    **given["metadata"],
                    "resourceVersion": str(self.revision),
                    "uid": "u-1",
                    "managedFields": [{"manager": field_manager}],
                    "creationTimestamp": "2026-12-07T12:00:00Z",
                },
                "status": {"phase": "Running"},
            }
            self.objects[key] = stored
        return Found(stored)

    def delete(self, resource, name, namespace):
        if self.objects.pop((resource.kind, namespace, name), None) is None:
            raise self._missing()


def _spec(obj: JSON) -> JSON:
    """What an apply sets: all but the status and the fields the server sets."""
    meta = {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace", "labels")}
    return {**{k: v for k, v in obj.items() if k not in ("metadata", "status")}, "meta": meta}


class MemoryInventory:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], JSON] = {}

    async def get(self, kind: str, name: str) -> JSON | None:
        return self.rows.get((kind, name))

    async def list(self, kind: str) -> list[JSON]:
        return [d for (k, _), d in self.rows.items() if k == kind]

    def record(self, result: ActionResult) -> None:
        for change in result.resources:
            if change.op == "delete":
                self.rows.pop((change.kind, change.name), None)
            else:
                self.rows[(change.kind, change.name)] = dict(change.data)


def cluster_provider() -> tuple[KubernetesProvider, StandInCluster]:
    provider = KubernetesProvider("kube", {"kubeconfig": "/etc/kube/config"})
    stand_in = StandInCluster()
    provider.backend = ClusterBackend("/etc/kube/config", connect=lambda: stand_in)
    return provider, stand_in


def call(action: str, params: JSON, inventory: MemoryInventory) -> ActionCall:
    return ActionCall(
        task_id="t1",
        workflow_id="w1",
        instance="kube",
        action=action,
        params=params,
        attempt=1,
        timeout=None,
        workspace=Path("/tmp"),
        inventory=inventory,
    )


async def test_a_cluster_apply_creates_then_leaves_unchanged_then_configures_and_is_undone():
    provider, cluster = cluster_provider()
    inventory = MemoryInventory()
    params = {"ref": "service/web/websvc", "manifest": SERVICE}
    provider.validate("manifest", "apply", params)

    created = await provider.apply(call("manifest.apply", params, inventory))
    assert (created.result["outcome"], created.result["backend"]) == ("created", "cluster")
    assert cluster.applied[-1][1:] == ("provisioning", True)  # one field manager, forced
    assert created.result["undo"] == {"ref": "service/web/websvc", "manifest": None}
    inventory.record(created)

    again = await provider.apply(call("manifest.apply", params, inventory))
    assert again.result["outcome"] == "unchanged" and again.resources == ()
    undone = await provider.compensate(call("manifest.apply", params, inventory), again)
    assert undone.output == "nothing to undo"
    assert ("Service", "web", "websvc") in cluster.objects

    update = {**params, "manifest": changed(SERVICE, "spec.ports", [{"port": 8080}])}
    configured = await provider.apply(call("manifest.apply", update, inventory))
    assert configured.result["outcome"] == "configured"
    assert configured.result["undo"]["manifest"] == SERVICE  # the manifest it replaced
    inventory.record(configured)
    restored = await provider.compensate(call("manifest.apply", update, inventory), configured)
    inventory.record(restored)
    assert cluster.objects[("Service", "web", "websvc")]["spec"] == SERVICE["spec"]

    removed = await provider.compensate(call("manifest.apply", params, inventory), created)
    assert removed.result["outcome"] == "removed"
    assert ("Service", "web", "websvc") not in cluster.objects


async def test_an_update_of_an_object_made_elsewhere_is_undone_with_the_object_as_it_was_read():
    provider, _ = cluster_provider()
    backend = provider.backend
    await backend.apply(POD, None)  # someone else's
    configured = await backend.apply(changed(POD, "metadata.labels", {"app": "v2"}), None)
    assert configured.outcome == "configured"
    assert configured.undo is not None
    assert configured.undo["metadata"] == {
        "name": "web",
        "namespace": "default",
        "labels": {"app": "web"},
    }
    assert "status" not in configured.undo
    assert readable(
        {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}}
    ) == {"metadata": {}}


async def test_the_cluster_lists_objects_as_seed_000_does():
    provider, cluster = cluster_provider()
    await provider.backend.apply(POD, None)
    cluster.objects[("CustomResourceDefinition", "default", "certificates.cert-manager.io")] = {
        "metadata": {
            "name": "certificates.cert-manager.io",
            "creationTimestamp": "2026-11-07T00:00:00Z",
        },
        "spec": {
            "group": "cert-manager.io",
            "names": {"kind": "Certificate"},
            "scope": "Namespaced",
            "versions": [{"name": "v1alpha2", "storage": False}, {"name": "v1", "storage": True}],
        },
    }
    listed = await provider.apply(call("manifest.list", {"what": "pods"}, MemoryInventory()))
    assert listed.result["backend"] == "cluster"
    assert [(p["name"], p["namespace"], p["status"]) for p in listed.result["pods"]] == [
        ("web", "default", "Running")
    ]
    crds = (await provider.apply(call("manifest.list", {"what": "crds"}, MemoryInventory()))).result
    row = crds["crds"][0]
    assert {k: row[k] for k in ("name", "group", "version", "kind", "scope")} == {
        "name": "certificates.cert-manager.io",
        "group": "cert-manager.io",
        "version": "v1",
        "kind": "Certificate",
        "scope": "Namespaced",
    }
    status = await provider.apply(call("manifest.status", {}, MemoryInventory()))
    assert status.result["version"] == "v1.31.0"
    row = cluster_pod_row(
        {
            "metadata": {"name": "p"},
            "spec": {"containers": [{}, {}]},
            "status": {"containerStatuses": [{"ready": True, "restartCount": 3}]},
        }
    )
    assert (row["ready"], row["restarts"]) == ("1/2", 3)
    assert crd_row({})["name"] == ""


async def test_the_clusters_refusals_and_silence_become_the_providers_errors():
    provider, cluster = cluster_provider()
    refused = ApiException(status=422, reason="Unprocessable Entity")
    refused.body = json.dumps(
        {"message": 'Pod "web" is invalid: spec.containers[0].image: Required'}
    )
    cluster.fail = api_exception(refused)
    with pytest.raises(KubernetesRefused, match=r"spec.containers\[0\].image: Required"):
        await provider.backend.apply(POD, None)
    cluster.fail = MaxRetryError(pool=None, url="/api")  # type: ignore[arg-type]
    with pytest.raises(KubernetesUnavailable, match="does not answer"):
        await provider.backend.apply(POD, None)


async def test_a_kubeconfig_that_cannot_be_read_means_kubernetes_is_not_available(tmp_path):
    backend = ClusterBackend(str(tmp_path / "absent"))
    with pytest.raises(KubernetesUnavailable, match="kubeconfig"):
        await backend.status()
    (tmp_path / "config").write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    with pytest.raises(KubernetesUnavailable, match="kubeconfig"):
        await ClusterBackend(str(tmp_path / "config")).status()


def test_an_apply_names_the_object_its_manifest_names():
    provider, _ = cluster_provider()
    with pytest.raises(InvalidParams) as refused:
        provider.validate("manifest", "apply", {"ref": "pod/default/other", "manifest": POD})
    assert refused.value.path == "ref"
    deployment = {**DEPLOYMENT, "metadata": {"name": "web"}}
    with pytest.raises(InvalidParams) as restored:  # not another kind under the pod's name
        provider.validate("manifest", "restore", {"ref": "pod/default/web", "manifest": deployment})
    assert restored.value.path == "ref"
    provider.validate("manifest", "restore", {"ref": "pod/default/web", "manifest": None})
    with pytest.raises(InvalidParams) as bad:
        provider.validate(
            "manifest",
            "apply",
            {"ref": "pod/default/web", "manifest": changed(POD, "spec.containers[0].name", "A")},
        )
    assert bad.value.path == "manifest.spec.containers[0].name"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    path=st.sampled_from(["pods", "deployments", "services"]),
    base=st.sampled_from([POD, DEPLOYMENT, SERVICE]),
    where=st.sampled_from(["", "metadata", "spec", "spec.containers", "spec.template"]),
    value=JSON_VALUES,
)
def test_any_json_in_any_place_is_accepted_or_refused_naming_a_field(path, base, where, value):
    manifest: Any = copy.deepcopy(base)
    if where:
        node = manifest
        *parents, last = where.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[last] = value
    else:
        manifest = value
    refused: InvalidParams | None = None
    try:
        check(manifest, path)
    except InvalidParams as exc:  # anything else would be a 500
        refused = exc
    assert refused is None or refused.path.startswith("manifest")
