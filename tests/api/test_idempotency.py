"""`Idempotency-Key`: a retried POST gets the first answer and starts nothing new."""

from __future__ import annotations

import uuid


def _count(client) -> int:
    return int(client.get("/workflows").headers["X-Total-Count"])


def test_a_retried_submission_returns_the_first_result_and_starts_nothing(client):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"infra": "production"}
    before = _count(client)
    first = client.post("/workflows/servers/create", json=body, headers=key)
    again = client.post("/workflows/servers/create", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert _count(client) == before + 1
    other = client.post(
        "/workflows/servers/create", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    assert other.json()["data"] != first.json()["data"]


def test_a_key_reused_for_another_request_is_refused(client):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    assert (
        client.post(
            "/workflows/servers/create", json={"infra": "production"}, headers=key
        ).status_code
        == 202
    )
    reused = client.post("/rollback/checkpoints", json={"name": "x"}, headers=key)
    assert reused.status_code == 422
    assert reused.json()["code"] == "INVALID_INPUT"
    assert "Idempotency-Key" in reused.json()["error"]


def test_errors_are_replayed_too_but_only_to_the_same_credential(server, client):
    import httpx

    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = client.post("/workflows/servers/create", json={"infra": "nope"}, headers=key)
    assert first.status_code == 404
    assert (
        client.post("/workflows/servers/create", json={"infra": "nope"}, headers=key).json()
        == first.json()
    )
    with httpx.Client(base_url=server.url) as anonymous:
        refused = anonymous.post("/workflows/servers/create", json={"infra": "nope"}, headers=key)
        assert refused.status_code == 401
