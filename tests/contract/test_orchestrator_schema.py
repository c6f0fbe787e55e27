"""schemathesis against the orchestrator's published OpenAPI schema, as an administrator."""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.contract.fuzz import fuzz
from tests.servers import EXAMPLE_WORKSPACE, OrchestratorProcess, provision_user


# About 2,000 requests, half of them the batch body's boundaries in JSON and YAML:
# 45 s on an idle machine, several times that on one shared with other test runs; the
# timeout is a safety net against a hang, not a measure.
@pytest.mark.timeout(900)
def test_the_orchestrator_answers_within_its_schema_and_never_500(tmp_path):
    # The example workspace, so infra workflows run; `local` is simulated too, so no
    # generated command runs.
    shutil.copytree(EXAMPLE_WORKSPACE, tmp_path / "workspace")
    server = OrchestratorProcess(
        tmp_path / "data",
        workspace=tmp_path / "workspace",
        env={
            "PROVISIONING_PROVIDERS__LOCAL__TYPE": "sim",
            "PROVISIONING_PROVIDERS__LOCAL__LATENCY": "0",
            # Fuzzed requests ask to wait for workflows with long retry delays.
            "PROVISIONING_SERVER__WAIT_TIMEOUT": "0.5",
            # An administrator's key without a second factor: every route, OPTIONS too.
            "PROVISIONING_AUTH__MFA_REQUIRED_ROLES": "[]",
        },
    ).start()
    try:
        admin = provision_user(server.data_dir, server.env, "schemathesis", ["admin"])
        assert httpx.options(f"{server.url}/workflows", headers=_bearer(admin)).status_code == 204
        done = fuzz(server.url, admin, "orchestrator.toml")
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout[-6000:]
    assert "passed" in done.stdout
    assert "Traceback" not in server.log()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
