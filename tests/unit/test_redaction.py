"""Secrets in task parameters are never shown by the API, wherever they sit."""

from __future__ import annotations

import pytest

from orchestrator.api.redaction import MASK, redact, redact_args

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


def test_values_under_secret_names_are_masked_at_any_depth():
    params = {
        "name": "web-01",
        "db_password": "hunter2",
        "auth": {"bearer": "eyJabc"},
        "headers": {"Authorization": "Bearer eyJabc", "Accept": "json"},
        "nested": [{"api_key": "k"}, {"cookie": "c=1"}],
    }
    assert redact(params) == {
        "name": "web-01",
        "db_password": MASK,
        "auth": MASK,
        "headers": {"Authorization": MASK, "Accept": "json"},
        "nested": [{"api_key": MASK}, {"cookie": MASK}],
    }


def test_flag_style_secrets_in_arguments_are_masked():
    args = ["deploy", "--password=hunter2", "--token", "t0k", "user=me", "PGPASSWORD=x", "-v"]
    assert redact_args(args) == [
        "deploy",
        f"--password={MASK}",
        "--token",
        MASK,
        "user=me",
        f"PGPASSWORD={MASK}",
        "-v",
    ]


def test_credentials_inside_strings_are_masked():
    assert redact(["curl", "-H", "Authorization: Bearer eyJabc.def"]) == [
        "curl",
        "-H",
        f"Authorization: Bearer {MASK}",
    ]
    assert redact("postgresql://app:s3cret@db:5432/prod") == f"postgresql://app:{MASK}@db:5432/prod"
    assert redact({"url": "https://example.com/path"}) == {"url": "https://example.com/path"}


def test_what_is_not_a_secret_is_left_as_given():
    params = {"command": "sh", "args": ["-c", "echo hi"], "count": 3, "flag": True, "x": None}
    assert redact(params) == params
