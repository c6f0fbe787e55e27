"""`provisioning deployment …` against a real orchestrator and engine: create, list,
get, scale, logs and delete by app name, each change followed with `--wait`."""

from __future__ import annotations

import json

import pytest

from tests.containers.engine import PASSWORD, USERNAME, Engine
from tests.e2e.test_cli import run
from tests.servers import OrchestratorProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_the_cli_deploys_scales_and_removes_an_app(
    server: OrchestratorProcess,
    engine: Engine,
) -> None:
    url = server.url
    created = run(
        "deployment", "create", "cli-app", "--image", engine.image, "--port", "8080",
        "--replicas", "1", "--env", "GREETING=cli", "--registry-user", USERNAME, "--wait",
        url=url, env={"REGISTRY_PASSWORD": PASSWORD}, timeout=300,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    assert "Completed" in created.stdout and PASSWORD not in created.stdout
    listed = run("deployment", "list", "--json", url=url)
    apps = {d["app_name"]: d for d in json.loads(listed.stdout)["deployments"]}
    assert apps["cli-app"]["status"] == "running"
    scaled = run("deployment", "scale", "cli-app", "2", "--wait", url=url, timeout=300)
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    shown = run("deployment", "get", "cli-app", "--json", url=url)
    assert json.loads(shown.stdout)["live"]["replicas"]["ready"] == 2
    logs = run("deployment", "logs", "cli-app", "--tail", "5", url=url)
    assert logs.returncode == 0, logs.stderr
    removed = run("deployment", "delete", "cli-app", "--wait", "--yes", url=url, timeout=300)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not [n for n in engine.containers() if n.startswith("cli-app-")]
    missing = run("deployment", "get", "cli-app", url=url)
    assert missing.returncode != 0 and "does not exist" in missing.stderr + missing.stdout
