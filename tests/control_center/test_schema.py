"""schemathesis against the control center's published OpenAPI schema, as an admin."""

from __future__ import annotations

import pytest

from tests.contract.fuzz import fuzz
from tests.control_center.conftest import create_user, data_of


@pytest.mark.timeout(900)  # about 25 s idle; a safety net for a machine shared with other runs
def test_the_control_center_answers_within_its_schema_and_never_500(center, admin_client):
    # An API key rather than the session token: fuzzing /auth/logout must not end the run.
    created = admin_client.post("/api-keys", json={"name": "schemathesis"})
    assert created.status_code == 201, created.text
    targets = {
        "FUZZ_USER_ID": create_user(admin_client, ["viewer"])["id"],
        "FUZZ_POLICY_ID": data_of(
            admin_client.post("/policies", json={"name": "fuzzed", "rules": []}), 201
        )["id"],
        "FUZZ_KEY_ID": data_of(admin_client.post("/api-keys", json={"name": "fuzzed"}), 201)["id"],
    }
    key = created.json()["data"]["key"]
    done = fuzz(center.url, key, "control_center.toml", env=targets)
    assert done.returncode == 0, done.stdout[-6000:]
    assert "passed" in done.stdout
    assert "Traceback" not in center.log()
    # The run kept its access to the end, so every operation met the real checks.
    with center.client(key) as fuzzer:
        data_of(fuzzer.get("/users"))
