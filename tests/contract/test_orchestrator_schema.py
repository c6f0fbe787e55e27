"""schemathesis against the orchestrator's published OpenAPI schema."""

from __future__ import annotations

from tests.contract.fuzz import fuzz
from tests.servers import OrchestratorProcess


def test_the_orchestrator_answers_within_its_schema_and_never_500(tmp_path):
    # Fuzzed workflows name any provider: here `local` is simulated too, so no
    # generated command runs, and the workspace is empty.
    (tmp_path / "workspace").mkdir()
    server = OrchestratorProcess(
        tmp_path / "data",
        workspace=tmp_path / "workspace",
        env={
            "PROVISIONING_PROVIDERS__LOCAL__TYPE": "sim",
            "PROVISIONING_PROVIDERS__LOCAL__LATENCY": "0",
            # Fuzzed requests ask to wait for workflows with long retry delays.
            "PROVISIONING_SERVER__WAIT_TIMEOUT": "0.5",
        },
    ).start()
    try:
        done = fuzz(server.url, server.token)
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout[-6000:]
    assert "passed" in done.stdout
