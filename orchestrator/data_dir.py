"""The data directory: the embedded database, the keys, the attempt log. Private to the
user the service runs as: the directory is 0700 and what is in it 0600, whatever the
umask or an earlier version left (docs/security.md)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

#: The umask of the service's processes: what they create is theirs alone.
PRIVATE_UMASK = 0o077


def private_data_dir(path: str | Path) -> Path:
    """Create the directory (0700) or take group and other permissions away from it and
    from the files directly in it; return it."""
    directory = Path(path)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _restrict(directory, 0o700)
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False):
            _restrict(Path(entry.path), 0o600)
    return directory


def _restrict(path: Path, mode: int) -> None:
    with contextlib.suppress(PermissionError):  # not ours: left to its owner
        current = stat.S_IMODE(path.lstat().st_mode)
        if current & 0o077:
            path.chmod(current & mode)
