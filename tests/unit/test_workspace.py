"""Infra settings are read from inside the workspace only, symlinks included."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import InvalidInput
from orchestrator.workspace import load_infra

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent

SETTINGS = "servers:\n  - {name: web-01, provider: upcloud}\n"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    (root / "infra" / "production").mkdir(parents=True)
    (root / "infra" / "production" / "settings.yaml").write_text(SETTINGS)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "settings.yaml").write_text(SETTINGS)
    return root


def test_a_settings_file_is_read(workspace):
    assert [s.name for s in load_infra(workspace, "production", None).servers] == ["web-01"]


def test_a_symlinked_settings_file_leading_outside_is_refused(workspace):
    (workspace / "infra" / "production" / "evil.yaml").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput, match="outside the workspace"):
        load_infra(workspace, "production", "evil.yaml")


def test_a_default_settings_file_symlinked_outside_is_refused(workspace):
    (workspace / "infra" / "staging").mkdir()
    (workspace / "infra" / "staging" / "settings.yaml").symlink_to(
        workspace.parent / "outside" / "settings.yaml"
    )
    with pytest.raises(InvalidInput, match="outside the workspace"):
        load_infra(workspace, "staging", None)


def test_a_symlinked_infra_directory_leading_outside_is_refused(workspace):
    (workspace / "infra" / "elsewhere").symlink_to(workspace.parent / "outside")
    with pytest.raises(InvalidInput, match="outside the workspace"):
        load_infra(workspace, "elsewhere", None)


def test_a_symlink_inside_the_workspace_is_followed(workspace):
    (workspace / "infra" / "production" / "alias.yaml").symlink_to("settings.yaml")
    assert load_infra(workspace, "production", "alias.yaml").servers[0].name == "web-01"
