"""`provisioning kubernetes …`: apply Kubernetes manifests and list what runs, through
the client's Kubernetes section (`orchestrator.kubernetes_client`).

`apply -f FILE` takes a JSON or YAML file (`-` for standard input); a YAML file may hold
several objects separated by `---`, applied in order, as `kubectl apply -f` does.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.table import Table

from orchestrator.cli.common import Failure, Options, json_option, pass_options, print_json, stdout
from orchestrator.errors import DomainError
from orchestrator.kubernetes_client import PATHS, Kubernetes

#: A local file is read with the limits the server applies to a request's YAML (depth,
#: nodes: `orchestrator.http.limits.BodyLimits`, imported by `documents`, as it brings
#: the HTTP stack that `--help` does without).
LIMITS = {"depth": 64, "nodes": 10_000}
_SEPARATOR = re.compile(rb"^---[ \t]*(#.*)?$", re.MULTILINE)
COLUMNS = {
    "pods": ("name", "namespace", "status", "ready", "restarts", "age"),
    "deployments": ("name", "namespace", "ready", "up_to_date", "available", "age"),
    "services": ("name", "namespace", "type", "cluster_ip", "ports", "age"),
    "crds": ("name", "group", "version", "kind", "scope", "age"),
}


def documents(raw: bytes, json_file: bool) -> list[tuple[bytes, str, str]]:
    """(body, content type, API path) of each object of a manifest file."""
    from orchestrator.http.limits import BodyLimits, load_yaml

    limits = BodyLimits(**LIMITS)
    parts = [raw] if json_file else [p for p in _SEPARATOR.split(raw) if p and p.strip()]
    found = []
    for index, part in enumerate(parts):
        try:
            obj = msgspec.json.decode(part) if json_file else load_yaml(part, limits)
        except (msgspec.DecodeError, DomainError) as exc:
            raise Failure(f"document {index + 1}: {exc}") from None
        if obj is None:
            continue
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if kind not in PATHS:
            raise Failure(f"document {index + 1}: kind {kind!r}: apply takes {', '.join(PATHS)}")
        found.append((part, "application/json" if json_file else "application/yaml", PATHS[kind]))
    if not found:
        raise Failure("the file holds no object")
    return found


@click.group("kubernetes")
def kubernetes() -> None:
    """Kubernetes objects on a cluster, or on podman (docs/deployments.md)."""


@kubernetes.command("apply")
@click.option("-f", "--filename", required=True, help="A JSON or YAML manifest; - for stdin.")
@json_option
@pass_options
def apply(options: Options, filename: str) -> None:
    """Create or update the objects of a manifest file."""
    raw = sys.stdin.buffer.read() if filename == "-" else _read(filename)
    is_json = filename.endswith(".json") or raw.lstrip()[:1] in (b"{", b"[")
    answers: list[dict[str, Any]] = []
    with options.client() as client:
        section = Kubernetes(client)
        for body, content_type, path in documents(raw, is_json):
            answer = section.apply(body, path, content_type)
            answers.append(answer)
            if not options.json:
                outcome = answer.get("outcome") or answer.get("status")
                stdout.print(f"{answer['ref']} {outcome} ({answer.get('backend', '-')})")
    if options.json:
        print_json(answers)


@kubernetes.command("get")
@click.argument("what", type=click.Choice(list(COLUMNS)))
@json_option
@pass_options
def get(options: Options, what: str) -> None:
    """List pods, deployments, services or crds."""
    with options.client() as client:
        listing = Kubernetes(client).list(what)
    if options.json:
        print_json(listing)
        return
    table = Table(box=None, header_style="bold")
    for column in COLUMNS[what]:
        table.add_column(column.replace("_", "-").upper())
    for item in listing.get(what) or []:
        table.add_row(*(_cell(item.get(column)) for column in COLUMNS[what]))
    stdout.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value in (None, "") else str(value)


def _read(filename: str) -> bytes:
    try:
        return Path(filename).read_bytes()
    except OSError as exc:
        raise Failure(f"{filename}: {exc.strerror or exc}") from None
