"""Kubernetes apply (seed 000) where neither backend is there, through real HTTP: 503
`KUBERNETES_NOT_INSTALLED`, bodies checked first (422 naming the field, a YAML bomb
refused at once), policies. tests/containers/test_kubernetes.py runs objects on podman."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import OrchestratorProcess, provision_user

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "nginx-pod", "namespace": "default"},
    "spec": {
        "containers": [{"name": "nginx", "image": "nginx:latest", "ports": [{"containerPort": 80}]}]
    },
}
#: Seed 000's own YAML example.
POD_YAML = b"""\
apiVersion: v1
kind: Pod
metadata:
  name: nginx-pod
  namespace: default
spec:
  containers:
  - name: nginx
    image: nginx:latest
    ports:
    - containerPort: 80
"""
BILLION_LAUGHS = b"""\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrchestratorProcess]:
    """A `kubernetes` instance with no cluster and no podman on its socket."""
    data = tmp_path_factory.mktemp("kubernetes")
    process = OrchestratorProcess(
        data,
        env={
            "PROVISIONING_PROVIDERS__KUBE__TYPE": "kubernetes",
            "PROVISIONING_PROVIDERS__KUBE__SOCKET": str(data / "no-podman.sock"),
        },
    ).start()
    yield process
    process.stop()


@pytest.fixture
def kube(unreachable: OrchestratorProcess) -> Iterator[httpx.Client]:
    with unreachable.client() as client:
        yield client


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text
    return str(response.json()["error"])


def workflows(client: httpx.Client) -> int:
    return int(client.get("/workflows").headers["X-Total-Count"])


def test_with_neither_a_cluster_nor_podman_every_endpoint_is_503_and_nothing_is_submitted(kube):
    before = workflows(kube)
    for path in ("pods", "deployments", "services", "crds"):
        message = error_of(kube.get(f"/api/v1/kubernetes/{path}"), 503, "KUBERNETES_NOT_INSTALLED")
        assert "podman does not answer" in message
    error_of(
        kube.post("/api/v1/kubernetes/pods", content=POD_YAML, headers=YAML),
        503,
        "KUBERNETES_NOT_INSTALLED",
    )
    error_of(kube.post("/kubernetes/pods", json=POD), 503, "KUBERNETES_NOT_INSTALLED")
    assert workflows(kube) == before


def test_without_a_kubernetes_instance_it_is_503_saying_how_to_configure_one(client):
    message = error_of(client.get("/api/v1/kubernetes/pods"), 503, "KUBERNETES_NOT_INSTALLED")
    assert "type 'kubernetes'" in message
    error_of(client.post("/api/v1/kubernetes/pods", json=POD), 503, "KUBERNETES_NOT_INSTALLED")


def test_a_yaml_bomb_is_refused_at_once_with_a_4xx(kube):
    for body in (BILLION_LAUGHS, b"a: &a [x]\nb: *a\nc: &c [*c]\n"):
        response = kube.post("/api/v1/kubernetes/pods", content=body, headers=YAML)
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["success"] is False
    message = error_of(
        kube.post("/api/v1/kubernetes/pods", content=BILLION_LAUGHS, headers=YAML),
        422,
        "INVALID_INPUT",
    )
    assert "nodes" in message
    huge = b"a: '" + b"x" * 2_000_000 + b"'\n"
    assert kube.post("/api/v1/kubernetes/pods", content=huge, headers=YAML).status_code == 413


def test_a_manifest_is_checked_before_any_backend_is_asked(kube):
    no_image = {**POD, "spec": {"containers": [{"name": "nginx"}]}}
    message = error_of(kube.post("/api/v1/kubernetes/pods", json=no_image), 422, "INVALID_INPUT")
    assert message == "manifest.spec.containers[0].image: required"
    wrong = error_of(
        kube.post("/api/v1/kubernetes/deployments", content=POD_YAML, headers=YAML),
        422,
        "INVALID_INPUT",
    )
    assert "manifest.kind" in wrong and "Deployment" in wrong
    error_of(
        kube.post("/api/v1/kubernetes/pods", content=b"{", headers={"Content-Type": "text/yaml"}),
        400,
        "INVALID_INPUT",
    )
    error_of(
        kube.post(
            "/api/v1/kubernetes/pods",
            content=json.dumps(POD).encode(),
            headers={"Content-Type": "text/plain"},
        ),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    nul = {**POD, "metadata": {"name": "x\u0000"}}
    error_of(kube.post("/api/v1/kubernetes/pods", json=nul), 422, "INVALID_INPUT")


def test_a_viewer_lists_but_may_not_apply(unreachable):
    key = provision_user(unreachable.data_dir, unreachable.env, "kube-viewer", ["viewer"])
    with httpx.Client(
        base_url=unreachable.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as viewer:
        error_of(viewer.get("/api/v1/kubernetes/pods"), 503, "KUBERNETES_NOT_INSTALLED")
        error_of(viewer.post("/api/v1/kubernetes/pods", json=POD), 403, "FORBIDDEN")
