"""What a request to the control center may hold: nesting, strict types, control
characters, timestamps, and the `Allow` header."""

from __future__ import annotations

import json

import pytest

from tests.control_center.conftest import error_of, login
from tests.control_center.servers import ControlCenterProcess

JSON = {"content-type": "application/json"}


def nested(depth: int) -> str:
    """JSON text of arrays and objects nested `depth` deep (json.dumps would recurse)."""
    opening = "".join("[" if level % 2 else '{"next": ' for level in range(depth))
    closing = "".join("]" if level % 2 else "}" for level in reversed(range(depth)))
    return opening + '"bottom"' + closing


def with_deep(body: dict[str, object], depth: int) -> str:
    return json.dumps(body).replace('"DEEP"', nested(depth))


@pytest.mark.parametrize("depth", [100, 800, 1000, 2000])
def test_deeply_nested_json_is_refused_before_it_is_decoded(center, admin_client, depth):
    rule = {"effect": "Allow", "resource": "DEEP"}
    bodies = {
        "/policies": with_deep({"name": "deep", "rules": [rule]}, depth),
        "/users": with_deep({"username": "DEEP", "email": "a@b.c", "password": "x"}, depth),
    }
    for path, body in bodies.items():
        response = admin_client.post(path, content=body, headers=JSON)
        assert "server.max_body_depth" in error_of(response, 422, "INVALID_INPUT"), path
    with center.client() as anonymous:
        body = with_deep({"username": "admin", "password": "DEEP"}, depth)
        response = anonymous.post("/auth/login", content=body, headers=JSON)
        assert "server.max_body_depth" in error_of(response, 422, "INVALID_INPUT")
    log = center.log()
    assert "Traceback" not in log
    assert "RecursionError" not in log


def test_a_deep_login_is_refused_as_such_past_the_rate_limit(tmp_path):
    # The seed's budget of 5 logins a minute: a deep body is refused for its depth,
    # cheaply, the sixth time as the first, and never reaches a handler to be a 500.
    center = ControlCenterProcess(tmp_path / "data").start()
    try:
        body = with_deep({"username": "admin", "password": "DEEP"}, 2000)
        with center.client() as anonymous:
            for _ in range(7):
                response = anonymous.post("/auth/login", content=body, headers=JSON)
                assert "server.max_body_depth" in error_of(response, 422, "INVALID_INPUT")
        assert "Traceback" not in center.log()
    finally:
        center.stop()


CONTROL = ["\x00", "\x07", "\x1b[2J", "\x7f", "\x9b", "a\nb"]


@pytest.mark.parametrize("bad", CONTROL)
def test_names_with_control_characters_are_refused(center, admin_client, bad):
    assert "$.name" in error_of(
        admin_client.post("/api-keys", json={"name": f"k{bad}"}), 422, "INVALID_INPUT"
    )
    policy = {"name": f"p{bad}", "rules": []}
    assert "$.name" in error_of(admin_client.post("/policies", json=policy), 422, "INVALID_INPUT")
    user = {"username": "someone", "email": f"some{bad}one@example.com", "password": "x"}
    assert "$.email" in error_of(admin_client.post("/users", json=user), 422, "INVALID_INPUT")
    with center.client() as anonymous:
        message = error_of(login(anonymous, f"admin{bad}", "x"), 422, "INVALID_INPUT")
        assert "$.username" in message


def test_no_body_holds_a_nul(center, admin_client):
    user = {"username": "someone", "email": "s@example.com", "password": "Long-Enough-1\x00"}
    assert "NUL" in error_of(admin_client.post("/users", json=user), 422, "INVALID_INPUT")
    with center.client() as anonymous:
        assert "NUL" in error_of(login(anonymous, "admin", "pass\x00word"), 422, "INVALID_INPUT")


def test_free_text_takes_newlines_but_no_nul(admin_client):
    created = admin_client.post("/api-keys", json={"name": "k", "description": "one\ntwo"})
    assert created.status_code == 201, created.text
    nul = {"name": "k", "description": "one\x00two"}
    assert "$.description" in error_of(
        admin_client.post("/api-keys", json=nul), 422, "INVALID_INPUT"
    )


@pytest.mark.parametrize("path", ["/users/a%00b", "/policies/x%00", "/audit/logs?action=%00"])
def test_a_nul_in_the_path_or_query_is_refused(center, admin_client, path):
    assert "NUL" in error_of(admin_client.get(path), 422, "INVALID_INPUT")
    assert "Traceback" not in center.log()


def test_booleans_are_not_numbers_and_numbers_are_not_strings(admin_client):
    policy_id = admin_client.get("/policies").json()["data"][0]["id"]
    for body in ({"enabled": 0}, {"enabled": "true"}, {"version": 1}):
        response = admin_client.put(f"/policies/{policy_id}", json=body)
        assert f"$.{next(iter(body))}" in error_of(response, 422, "INVALID_INPUT")
    key = {"name": "k", "expires_in_days": "30"}
    assert "expires_in_days" in error_of(
        admin_client.post("/api-keys", json=key), 422, "INVALID_INPUT"
    )
    user = {"username": "someone", "email": "s@example.com", "password": "x", "enabled": 1}
    assert "$.enabled" in error_of(admin_client.post("/users", json=user), 422, "INVALID_INPUT")
    for path, query in [("/users", {"enabled": "1"}), ("/api-keys", {"include_revoked": "0"})]:
        refused = admin_client.get(path, params=query)
        assert f"{next(iter(query))}:" in error_of(refused, 422, "INVALID_INPUT")
    assert admin_client.get("/users", params={"enabled": "true"}).status_code == 200
    refused = admin_client.get("/policies", params={"limit": "1.0"})
    assert "limit:" in error_of(refused, 422, "INVALID_INPUT")


def test_audit_timestamps_are_iso_8601(admin_client):
    for bad in ("0.5", "1700000000", "yesterday", "2025-13-01T00:00:00Z"):
        response = admin_client.get("/audit/logs", params={"to": bad})
        assert "to:" in error_of(response, 422, "INVALID_INPUT"), bad
    response = admin_client.get("/audit/logs", params={"from": "1", "to": "2025-09-26T10:00:00Z"})
    assert "from:" in error_of(response, 422, "INVALID_INPUT")
    fine = admin_client.get("/audit/logs", params={"to": "2030-09-26T10:00:00Z", "limit": 1})
    assert fine.status_code == 200, fine.text


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/users", "GET, OPTIONS, POST"),
        ("/users/u-1", "DELETE, GET, OPTIONS, PUT"),
        ("/policies", "GET, OPTIONS, POST"),
        ("/policies/p-1", "DELETE, GET, OPTIONS, PUT"),
        ("/api-keys", "GET, OPTIONS, POST"),
        ("/user/profile", "GET, OPTIONS, PUT"),
    ],
)
def test_every_method_of_a_path_is_in_allow(admin_client, path, methods):
    options = admin_client.options(path)
    assert options.status_code == 204, options.text
    assert options.headers["allow"] == methods
    refused = admin_client.patch(path)
    assert refused.status_code == 405
    assert sorted(refused.headers["allow"].split(", ")) == methods.split(", ")
