"""`provisioning deployment …` against a real orchestrator and engine: create, list,
get, scale, logs and delete by app name, each change followed with `--wait`."""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest

from tests.containers.engine import PASSWORD, USERNAME, Engine
from tests.e2e.test_cli import run
from tests.servers import PROVISIONING, TOKENS, OrchestratorProcess

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

    added = run("deployment", "domains", "add", "cli-app", "cli.example.com", url=url)
    assert added.returncode == 0 and "added cli.example.com" in added.stdout, added.stderr
    bad = run("deployment", "domains", "add", "cli-app", "../etc", url=url)
    assert bad.returncode != 0 and "domain" in bad.stderr + bad.stdout
    domains = run("deployment", "domains", "list", "cli-app", "--json", url=url)
    assert [d["domain"] for d in json.loads(domains.stdout)] == ["cli.example.com"]
    assert json.loads(run("deployment", "get", "cli-app", "--json", url=url).stdout)["url"] == (
        "http://cli.example.com"
    )
    dropped = run("deployment", "domains", "remove", "cli-app", "cli.example.com", url=url)
    assert dropped.returncode == 0, dropped.stderr

    metrics = json.loads(run("deployment", "metrics", "cli-app", "--json", url=url).stdout)
    assert [r["running"] for r in metrics["replicas"]] == [True, True]
    assert all(r["memory_bytes"] > 0 for r in metrics["replicas"])

    # --follow streams: the last line of each replica, then new ones as they come; the
    # command runs until it is stopped.
    ports = [
        i["host_port"]
        for i in json.loads(run("deployment", "get", "cli-app", "--json", url=url).stdout)["live"][
            "instances"
        ]
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONING_")}
    command = [PROVISIONING, "--url", url, "--token", TOKENS[url]]
    follower = subprocess.Popen(
        [*command, "deployment", "logs", "cli-app", "--tail", "1", "--follow", "--json"],
        env=base,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        sources: list[str] = []
        while len(set(sources)) < 2 or len(sources) < 4:
            line = follower.stdout.readline()
            assert line, "the follower ended"
            sources.append(json.loads(line)["source"])
            if len(sources) == 2:
                for port in ports:
                    httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=5)
        assert follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(30)
        if follower.stdout is not None:
            follower.stdout.close()
    removed = run("deployment", "delete", "cli-app", "--wait", "--yes", url=url, timeout=300)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not [n for n in engine.containers() if n.startswith("cli-app-")]
    missing = run("deployment", "get", "cli-app", url=url)
    assert missing.returncode != 0 and "does not exist" in missing.stderr + missing.stdout
