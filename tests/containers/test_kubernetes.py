"""Kubernetes apply (seed 000) on the tests' podman service: an orchestrator process with
a `kubernetes` instance and no cluster, so objects run under `podman kube play`.

The busybox image is pulled into podman's store first (the tests' registry wants
credentials, which kube play is not given), and the manifests ask for it
`IfNotPresent`. Every pod the tests make is removed at the end, even when one fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.containers.engine import PASSWORD, USERNAME, Engine
from tests.e2e.test_cli import run
from tests.servers import OrchestratorProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Iterator[OrchestratorProcess]:
    engine.podman("pull", "--creds", f"{USERNAME}:{PASSWORD}", engine.image_v2)
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("orchestrator"),
        env={
            "PROVISIONING_PROVIDERS__KUBE__TYPE": "kubernetes",
            "PROVISIONING_PROVIDERS__KUBE__SOCKET": str(engine.socket),
        },
    ).start()
    try:
        yield process
    finally:
        process.stop()
        engine.podman("pod", "rm", "-af", "-t", "0")


@pytest.fixture
def http(kube: OrchestratorProcess) -> Iterator[httpx.Client]:
    with kube.client() as client:
        client.timeout = httpx.Timeout(120)
        yield client


def pod(engine: Engine, name: str, greeting: str, host_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"containers": [container(engine, greeting, host_port)]},
    }


def container(engine: Engine, greeting: str, host_port: int | None) -> dict[str, Any]:
    port: dict[str, Any] = {"containerPort": 8080}
    if host_port is not None:
        port["hostPort"] = host_port
    return {
        "name": "httpd",
        "image": engine.image_v2,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "GREETING", "value": greeting}, {"name": "PORT", "value": "8080"}],
        "ports": [port],
    }


def deployment(engine: Engine, name: str, replicas: int, host_port: int | None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container(engine, f"hi from {name}", host_port)]},
            },
        },
    }


def as_yaml(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "content": yaml.safe_dump(manifest).encode(),
        "headers": {"Content-Type": "application/yaml"},
    }


def as_json(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "content": json.dumps(manifest).encode(),
        "headers": {"Content-Type": "application/json"},
    }


def answers(port: int, expected: str, patience: float = 60) -> None:
    """Wait until the port serves `expected` (a started container takes a moment to
    listen); the patience is a safety net, not a measure."""
    deadline = time.monotonic() + patience
    last = ""
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"http://127.0.0.1:{port}/", timeout=2, trust_env=False).text.strip()
        except httpx.HTTPError as exc:
            last = str(exc)
        if last == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"port {port} answered {last!r}, not {expected!r}")


def pods(engine: Engine) -> dict[str, str]:
    """podman's pods: name -> the id of its first non-infra container."""
    listed = json.loads(engine.podman("ps", "-a", "--pod", "--format", "json").stdout or "[]")
    found: dict[str, str] = {}
    for item in listed:
        if item.get("PodName") and not item.get("IsInfra"):
            found.setdefault(item["PodName"], item["Id"])
    return found


def test_a_pod_applied_as_yaml_runs_and_the_same_manifest_as_json_changes_nothing(http, engine):
    port = free_port()
    manifest = pod(engine, "web", "hello from web", port)
    created = http.post("/api/v1/kubernetes/pods", **as_yaml(manifest))
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert (data["outcome"], data["backend"], data["changed"]) == ("created", "podman", True)
    assert (data["kind"], data["namespace"], data["name"]) == ("Pod", "default", "web")
    assert "undo" not in data
    answers(port, "hello from web")
    before = pods(engine)["web"]

    for again in (as_yaml(manifest), as_json(manifest)):
        reapplied = http.post("/api/v1/kubernetes/pods", **again)
        assert reapplied.status_code == 200, reapplied.text
        assert reapplied.json()["data"]["outcome"] == "unchanged"
        assert reapplied.json()["data"]["changed"] is False
    assert pods(engine)["web"] == before  # the same container: nothing was replaced

    listed = http.get("/api/v1/kubernetes/pods").json()["data"]
    assert listed["backend"] == "podman"
    web = next(p for p in listed["pods"] if p["name"] == "web")
    assert (web["namespace"], web["status"], web["ready"]) == ("default", "Running", "1/1")
    assert {"hostIP": "127.0.0.1", "hostPort": port, "containerPort": 8080} in web["ports"]

    # A changed manifest, as JSON: the pod is replaced and serves the new greeting.
    changed = http.post(
        "/api/v1/kubernetes/pods", **as_json(pod(engine, "web", "hello again", port))
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["outcome"] == "configured"
    answers(port, "hello again")
    assert pods(engine)["web"] != before


def test_a_deployment_applied_as_json_runs_its_replicas_and_as_yaml_changes_nothing(http, engine):
    manifest = deployment(engine, "hello", 2, None)
    created = http.post("/api/v1/kubernetes/deployments", **as_json(manifest))
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert data["outcome"] == "created"
    assert data["object"]["ready"] == "2/2"
    assert {p["name"] for p in data["object"]["pods"]} == {"hello-pod-0", "hello-pod-1"}
    before = pods(engine)
    assert {"hello-pod-0", "hello-pod-1"} <= before.keys()

    reapplied = http.post("/api/v1/kubernetes/deployments", **as_yaml(manifest))
    assert reapplied.status_code == 200, reapplied.text
    assert reapplied.json()["data"]["outcome"] == "unchanged"
    after = pods(engine)
    assert all(after[name] == before[name] for name in ("hello-pod-0", "hello-pod-1"))

    listed = http.get("/api/v1/kubernetes/deployments").json()["data"]["deployments"]
    hello = next(d for d in listed if d["name"] == "hello")
    assert (hello["namespace"], hello["ready"], hello["available"]) == ("default", "2/2", 2)

    # One replica publishing a port, from YAML: it answers.
    port = free_port()
    single = deployment(engine, "single", 1, port)
    applied = http.post("/api/v1/kubernetes/deployments", **as_yaml(single))
    assert applied.status_code == 201, applied.text
    answers(port, "hi from single")


def test_an_update_is_undone_by_a_rollback_to_a_checkpoint(http, engine):
    port = free_port()
    first = http.post("/api/v1/kubernetes/pods", **as_yaml(pod(engine, "undone", "one", port)))
    assert first.status_code == 201, first.text
    checkpoint = http.post("/rollback/checkpoints", json={"name": "before the update"})
    assert checkpoint.status_code == 201, checkpoint.text
    second = http.post("/api/v1/kubernetes/pods", **as_yaml(pod(engine, "undone", "two", port)))
    assert second.json()["data"]["outcome"] == "configured", second.text
    answers(port, "two")
    created = http.post(
        "/api/v1/kubernetes/pods", **as_yaml(pod(engine, "undone-new", "new", free_port()))
    )
    assert created.status_code == 201, created.text

    result = http.post("/rollback/execute", json={"checkpoint_id": checkpoint.json()["data"]})
    assert result.status_code == 200, result.text
    assert result.json()["data"]["operations_failed"] == 0, result.text
    answers(port, "one")  # the previous manifest is back
    assert "undone-new" not in pods(engine)  # what the apply created is gone


def test_bad_manifests_are_422_naming_the_field_and_nothing_is_made(http, engine):
    before = pods(engine)
    good = pod(engine, "bad", "x", free_port())
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("pods", {**good, "spec": {"containers": [{"name": "c"}]}}, "spec.containers[0].image"),
        ("pods", {**good, "metadata": {"name": "Not_A_Name"}}, "metadata.name"),
        ("pods", {**good, "kind": "Deployment"}, "manifest.kind"),
        ("pods", {**good, "apiVersion": "v2"}, "manifest.apiVersion"),
        ("pods", {k: v for k, v in good.items() if k != "spec"}, "manifest.spec"),
        (
            "pods",
            {
                **good,
                "spec": {
                    "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 70000}]}]
                },
            },
            "ports[0].containerPort",
        ),
        (
            "deployments",
            {
                **deployment(engine, "bad", 1, None),
                "spec": {
                    "selector": {"matchLabels": {"app": "other"}},
                    "template": {"metadata": {"labels": {"app": "bad"}}, "spec": good["spec"]},
                },
            },
            "spec.selector.matchLabels",
        ),
    ]
    for path, manifest, field in cases:
        for body in (as_json(manifest), as_yaml(manifest)):
            response = http.post(f"/api/v1/kubernetes/{path}", **body)
            assert response.status_code == 422, (manifest, response.text)
            assert response.json()["code"] == "INVALID_INPUT"
            assert field in response.json()["error"], (field, response.text)
    not_yaml = http.post(
        "/api/v1/kubernetes/pods", content=b"kind: [", headers={"Content-Type": "text/yaml"}
    )
    assert not_yaml.status_code == 400, not_yaml.text
    assert pods(engine) == before


def test_an_image_that_cannot_be_had_fails_the_apply_and_leaves_no_pod(http, engine):
    manifest = pod(engine, "orphan", "x", free_port())
    manifest["spec"]["containers"][0]["image"] = f"{engine.registry}/absent:v1"
    response = http.post("/api/v1/kubernetes/pods", **as_yaml(manifest))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "PROVIDER_ERROR"
    assert response.json()["details"]["workflow_id"]
    assert "orphan" not in pods(engine)
    listed = http.get("/api/v1/kubernetes/pods").json()["data"]["pods"]
    assert "orphan" not in {p["name"] for p in listed}


def test_an_update_that_cannot_run_puts_the_previous_pod_back(http, engine):
    port = free_port()
    kept = http.post("/api/v1/kubernetes/pods", **as_yaml(pod(engine, "kept", "old", port)))
    assert kept.status_code == 201, kept.text
    broken = pod(engine, "kept", "new", port)
    broken["spec"]["containers"][0]["image"] = f"{engine.registry}/absent:v1"
    response = http.post("/api/v1/kubernetes/pods", **as_yaml(broken))
    assert response.status_code == 422, response.text
    assert "the previous Pod was put back" in response.json()["error"]
    answers(port, "old")
    again = http.post("/api/v1/kubernetes/pods", **as_yaml(pod(engine, "kept", "old", port)))
    assert again.json()["data"]["outcome"] == "unchanged", again.text


def test_a_service_is_refused_on_podman_saying_what_it_runs(http, engine):
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "websvc"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    response = http.post("/api/v1/kubernetes/services", **as_yaml(service))
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "KUBERNETES_NOT_INSTALLED"
    assert "hostPort" in response.json()["error"]
    listed = http.get("/api/v1/kubernetes/services").json()["data"]
    assert (listed["services"], listed["backend"]) == ([], "podman")
    assert http.get("/api/v1/kubernetes/crds").json()["data"]["crds"] == []


def test_the_cli_applies_a_file_of_several_objects_and_lists_them(kube, engine, tmp_path):
    port = free_port()
    manifest = tmp_path / "app.yaml"
    manifest.write_text(
        yaml.safe_dump(pod(engine, "cli-pod", "from the cli", port))
        + "---\n"
        + yaml.safe_dump(deployment(engine, "cli-deploy", 1, None))
    )
    applied = run("kubernetes", "apply", "-f", str(manifest), url=kube.url, timeout=300)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "pod/default/cli-pod created (podman)" in applied.stdout
    assert "deployment/default/cli-deploy created (podman)" in applied.stdout
    answers(port, "from the cli")
    again = run("kubernetes", "apply", "-f", str(manifest), "--json", url=kube.url, timeout=300)
    assert [a["outcome"] for a in json.loads(again.stdout)] == ["unchanged", "unchanged"]
    listed = run("kubernetes", "get", "pods", url=kube.url)
    assert listed.returncode == 0, listed.stderr
    assert "cli-pod" in listed.stdout and "cli-deploy-pod-0" in listed.stdout
    deployments = json.loads(run("kubernetes", "get", "deployments", "--json", url=kube.url).stdout)
    assert {d["name"] for d in deployments["deployments"]} >= {"cli-deploy"}
    other = tmp_path / "map.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    refused = run("kubernetes", "apply", "-f", str(other), url=kube.url)
    assert refused.returncode == 1 and "kind 'ConfigMap'" in refused.stderr
