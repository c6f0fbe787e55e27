"""What the provider asks of a backend (a cluster, or podman), and what an apply did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Applied:
    """What an apply did: `created`, `configured` or `unchanged`; the object as the
    backend now has it; how to undo it (`undo`: the manifest to put back, None to remove
    it), or that it cannot be (`reversible` False: the object it replaced is unknown)."""

    outcome: str
    object: JSON
    undo: JSON | None = None
    reversible: bool = True


class Backend(Protocol):
    name: str

    async def status(self) -> JSON: ...

    async def apply(self, manifest: JSON, recorded: JSON | None) -> Applied: ...

    async def restore(self, ref: str, manifest: JSON | None) -> JSON: ...

    async def list(self, what: str) -> list[JSON]: ...
