"""Infra settings in the workspace: `<workspace_root>/infra/<infra>/<settings file>`.

A settings file is YAML, JSON, TOML or Nickel (`.ncl`, evaluated by a `nickel`
executable on PATH, else by the bundled Nickel library). Names are confined: an infra
is one directory name and a settings file is one file name inside it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import yaml

from orchestrator.errors import InvalidInput, NotFound
from orchestrator.fields import ParallelLimit

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
DEFAULT_SETTINGS = ("config.ncl", "settings.yaml", "settings.yml", "settings.json", "settings.toml")


class ServerDef(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    provider: str
    plan: str | None = None
    zone: str | None = None
    #: Extra parameters for the provider (for a `local` instance: command, args, env, cwd).
    params: dict[str, Any] = {}


class TaskservDef(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    #: The servers it is installed on; empty means every server.
    servers: list[str] = []
    #: Other taskservs that must be installed first on the same server.
    dependencies: list[str] = []
    params: dict[str, Any] = {}


class ClusterDef(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    cluster_type: str
    provider: str
    taskservs: list[str] = []
    params: dict[str, Any] = {}


class InfraSettings(msgspec.Struct, forbid_unknown_fields=True):
    servers: list[ServerDef] = []
    taskservs: list[TaskservDef] = []
    clusters: list[ClusterDef] = []
    parallel_limit: ParallelLimit | None = None


def _evaluate_nickel(path: Path) -> Any:
    executable = shutil.which("nickel")
    if executable is not None:
        done = subprocess.run(
            [executable, "export", "--format", "json", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise InvalidInput(
                f"{path.name}: nickel evaluation failed: {ANSI.sub('', done.stderr)}"
            )
        return json.loads(done.stdout)
    try:
        import nickel
    except ImportError as exc:  # pragma: no cover - py-nickel is a dependency
        raise InvalidInput(
            f"{path.name}: .ncl settings need the `nickel` executable on PATH or the "
            "py-nickel package; install one, or use YAML, JSON or TOML"
        ) from exc
    try:
        return json.loads(nickel.run(path.read_text(), [str(path.parent)]))
    except nickel.NickelException as exc:
        raise InvalidInput(
            f"{path.name}: nickel evaluation failed: {ANSI.sub('', str(exc))}"
        ) from exc


def _parse(path: Path) -> Any:
    suffix = path.suffix.lower()
    text = path.read_text()
    try:
        if suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return tomllib.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"{path.name}: not valid {suffix[1:].upper()}: {exc}") from exc
    if suffix == ".ncl":
        return _evaluate_nickel(path)
    raise InvalidInput(
        f"settings '{path.name}': unsupported format; use .yaml, .yml, .json, .toml or .ncl"
    )


def confined(workspace: Path, path: Path, what: str) -> Path:
    """`path` with every symlink resolved, refused unless it stays inside the workspace
    (a symlink in the workspace must not make the orchestrator read any other file)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(workspace.resolve()):
        raise InvalidInput(
            f"{what}: '{path.relative_to(workspace)}' leads outside the workspace "
            "(a symlink?); only files inside the workspace are read"
        )
    return resolved


def infra_dir(workspace: Path, infra: str) -> Path:
    if not NAME.match(infra):
        raise InvalidInput(
            f"infra: '{infra}' is not a valid infra name (letters, digits, '.', '_', '-')"
        )
    directory = workspace / "infra" / infra
    if directory.exists():
        directory = confined(workspace, directory, "infra")
    if not directory.is_dir():
        available = sorted(p.name for p in (workspace / "infra").glob("*") if p.is_dir())
        raise NotFound(
            f"infra '{infra}' not found under {workspace / 'infra'}"
            + (f" (available: {', '.join(available)})" if available else "")
        )
    return directory


def load_infra(workspace: Path, infra: str, settings: str | None) -> InfraSettings:
    """Read and validate an infra's settings; errors name the file and the field."""
    directory = infra_dir(workspace, infra)
    if settings:
        if not NAME.match(settings):
            raise InvalidInput(f"settings: '{settings}' must be a file name inside the infra")
        path = directory / settings
        if not path.is_file():
            raise NotFound(f"settings file '{settings}' not found in infra '{infra}'")
    else:
        candidates = [directory / name for name in DEFAULT_SETTINGS]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise NotFound(
                f"infra '{infra}' has no settings file (looked for {', '.join(DEFAULT_SETTINGS)})"
            )
        path = found
    path = confined(workspace, path, "settings")
    try:
        return msgspec.convert(_parse(path), InfraSettings)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{infra}/{path.name}: {exc}") from exc
