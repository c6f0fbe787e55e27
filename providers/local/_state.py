"""What the provider keeps on disk about its commands, in its `state_dir`.

Per attempt (`<task id>.<attempt>`): `.exit`, the exit status its wrapper writes when the
command ends, and `.out`, the command's output (a `Spool`). They are what a restarted
orchestrator reads to record, rather than run again, a command that ended while nobody
watched. An attempt that did not succeed needs neither: both are removed when it ends. A
successful one keeps them, since the end may not be committed yet when a worker taking
over an expired lease needs them; they are removed after `KEEP_DAYS`.

The directory is the orchestrator's alone (mode 0700): a command able to write in it
could forge another task's recovery.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from pathlib import Path

from providers.base import ActionCall, PermanentProviderError
from providers.local._child import read_tail

#: How long the files of a successful attempt are kept (a server down that long).
KEEP_DAYS = 7
_COLLECT_EVERY = 3600.0


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._collected_at = 0.0

    def exit_file(self, call: ActionCall) -> Path:
        return self.path / f"{call.task_id}.{call.attempt}.exit"

    def spool_file(self, call: ActionCall) -> Path:
        return self.path / f"{call.task_id}.{call.attempt}.out"

    def prepare(self) -> None:
        """Create the directory, or check that the one there is this process's and
        private; `PermanentProviderError` if it is someone else's."""
        try:
            self.path.mkdir(mode=0o700, parents=True)
            return
        except FileExistsError:
            pass
        info = os.lstat(self.path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise PermanentProviderError(
                f"state_dir {self.path} is not a directory of this orchestrator's user "
                "(someone else made it): remove it, or set another `state_dir`"
            )
        if info.st_mode & 0o077:
            os.chmod(self.path, 0o700)

    def exit_status(self, call: ActionCall) -> str | None:
        try:
            return self.exit_file(call).read_text().strip()
        except OSError:
            return None

    def output(self, call: ActionCall, limit: int) -> str | None:
        """The last `limit` bytes an attempt's command printed, if its output was kept."""
        try:
            fd = os.open(self.spool_file(call), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return read_tail(fd, limit)
        finally:
            os.close(fd)

    def forget(self, call: ActionCall) -> None:
        """Remove an attempt's files, unless its command exited 0: no recovery needs them."""
        if self.exit_status(call) == "0":
            return
        for path in (self.exit_file(call), self.spool_file(call)):
            path.unlink(missing_ok=True)

    def collect(self) -> None:
        """Remove, in a thread, the files older than `KEEP_DAYS` (hourly at most)."""
        now = time.time()
        if now - self._collected_at < _COLLECT_EVERY:
            return
        self._collected_at = now
        threading.Thread(
            target=self._collect, args=(now,), name="collect-state", daemon=True
        ).start()

    def _collect(self, now: float) -> None:
        cutoff = now - KEEP_DAYS * 86400
        with contextlib.suppress(OSError), os.scandir(self.path) as entries:
            for entry in entries:
                if entry.name.endswith((".exit", ".out")):
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)
