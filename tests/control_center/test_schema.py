"""schemathesis against the control center's published OpenAPI schema, as an admin."""

from __future__ import annotations

import pytest

from tests.contract.fuzz import fuzz


@pytest.mark.timeout(300)  # about 25 s; up to twice that on a busy machine
def test_the_control_center_answers_within_its_schema_and_never_500(center, admin_client):
    # An API key rather than the session token: fuzzing /auth/logout must not end the run.
    created = admin_client.post("/api-keys", json={"name": "schemathesis"})
    assert created.status_code == 201, created.text
    done = fuzz(center.url, created.json()["data"]["key"], "control_center.toml")
    assert done.returncode == 0, done.stdout[-6000:]
    assert "passed" in done.stdout
    assert "Traceback" not in center.log()
