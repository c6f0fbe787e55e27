"""A provider type in one module: files in a directory.

The test suite's example of a third-party provider (tests/plugins/test_files_provider.py),
walked through in docs/resources.md. Config: `root`, the directory the files live in
(which must exist), and `max_bytes` (default 4096), the largest content it writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec

from providers.base import (
    ActionCall,
    ActionResult,
    BaseProvider,
    InvalidParams,
    Kind,
    Operation,
    PermanentProviderError,
    ProviderConfigError,
    ResourceChange,
    ResourceNotFound,
)

#: One file name: no directory, so nothing outside `root` is reachable.
FileName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class FileCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: FileName
    content: str = ""


class FileNamed(msgspec.Struct, forbid_unknown_fields=True):
    name: FileName


class FilesProvider(BaseProvider):
    """Creates, deletes and reads files in its `root` directory."""

    type_name: ClassVar[str] = "files"
    kinds: ClassVar[tuple[Kind, ...]] = (
        Kind(
            "file",
            "files",
            (
                # Undone by `delete`: BaseProvider.compensate applies it, with the name.
                Operation("create", FileCreate, undo="delete", summary="write a new file"),
                # No undo: the content is gone, so a rollback reports it irreversible.
                Operation("delete", FileNamed, summary="remove a file"),
                Operation("read", FileNamed, mutates=False, summary="a file's content"),
            ),
        ),
    )

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        unknown = sorted(set(config) - {"root", "max_bytes"})
        if unknown:
            raise ProviderConfigError(f"unknown settings {unknown}")
        root = config.get("root")
        if not isinstance(root, str) or not Path(root).is_dir():
            raise ProviderConfigError("root must name an existing directory")
        self.root = Path(root)
        self.max_bytes = int(config.get("max_bytes", 4096))

    def validate(self, kind: str, operation: str, params: Mapping[str, Any]) -> msgspec.Struct:
        """The declared struct, and a content within this instance's `max_bytes`."""
        struct = super().validate(kind, operation, params)
        if isinstance(struct, FileCreate) and len(struct.content.encode()) > self.max_bytes:
            raise InvalidParams("content", f"at most {self.max_bytes} bytes")
        return struct

    async def apply(self, call: ActionCall) -> ActionResult:
        _, operation = self.declared(call)
        name = call.params["name"]
        path = self.root / name
        if operation.name == "read":
            if not path.is_file():
                raise ResourceNotFound(f"file {name} does not exist")
            return ActionResult(result={"name": name, "content": path.read_text()})
        if operation.name == "delete":
            if not path.exists():
                return ActionResult(output=f"file {name} does not exist")
            path.unlink()
            return ActionResult(
                output=f"deleted file {name}", resources=(ResourceChange("file", name, "delete"),)
            )
        content = call.params.get("content", "")
        if path.exists():
            if path.read_text() == content:
                return ActionResult(output=f"file {name} already exists")  # nothing to undo
            raise PermanentProviderError(f"file {name} already exists with other content")
        path.write_text(content)
        data = {"bytes": len(content.encode())}
        return ActionResult(
            output=f"created file {name}",
            resources=(ResourceChange("file", name, "create", data=data),),
        )
