"""The attempt log: which attempt of a task has begun, and its handle, known at once.

The embedded executor calls a provider without waiting for the commit of the task's
`Running` transition: waiting was about a tenth of the time to run a short command
(tests/perf/bench_executor.py, W3). What a restarted orchestrator needs to know of an
attempt that began is first appended here instead, to a file in the data directory,
which outlives the process however it is killed:

- that the attempt began, so that it counts against the task's `max_attempts`;
- its handle, as soon as the provider gives one (a process group), so that whatever the
  attempt left running is stopped before the task runs again.

A restart reads the log before anything starts (`read`), recovers an attempt the store
does not know of as an interrupted `Running` one, and empties the log once the journal
has committed that (`reset`). A record is needed only until the journal has committed the
transition recorded with it, so the log is two files: when the current one is full, it
replaces the previous one, provided the journal has committed everything recorded before
the previous one was set aside (otherwise the current one grows).

Records are copied into a shared memory map of the file, not written with `write`: no
system call per record (two `write`s were 5% of the event loop's time running short
commands). The pages are the file's own, in the kernel's cache, so a record is in the
file as soon as it is copied, whatever happens to the process next. The unused end of
the file is zeros; a record cut short by a kill in the middle of its copy is skipped.

Like the SQLite store in its default `synchronous=NORMAL` mode, the log survives the
orchestrator being killed, not the machine losing power; commands die with the machine.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

if TYPE_CHECKING:
    from orchestrator.store.journal import Journal

log = structlog.get_logger(__name__)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[Any]).decode


@dataclass(slots=True)
class LoggedAttempt:
    """The latest attempt of a task the log knows of, and its handle if one was given."""

    attempt: int
    handle: dict[str, Any] | None = None


class AttemptLog:
    def __init__(self, path: Path, journal: Journal, max_bytes: int = 1 << 20) -> None:
        self.path = path
        self.previous_path = path.with_name(path.name + ".1")
        self._journal = journal
        self._max_bytes = max_bytes
        self._map: mmap.mmap | None = None
        self._position = 0
        #: The journal batch that covers every record of the previous file.
        self._previous_covered_by = 0

    def open(self) -> None:
        """Map the current file (created if missing); records go after those in it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = max(os.fstat(fd).st_size, self._max_bytes)
            _allocate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)  # the map keeps the file
        end = self._map.find(b"\0")
        self._position = len(self._map) if end < 0 else end
        if self.previous_path.exists():  # not known to be committed before a new batch
            self._previous_covered_by = self._journal.next_batch

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def read(self) -> dict[str, LoggedAttempt]:
        """The latest attempt of every task in the log (both files, oldest first)."""
        latest: dict[str, LoggedAttempt] = {}
        for path in (self.previous_path, self.path):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            end = data.find(b"\0")
            for line in (data if end < 0 else data[:end]).splitlines():
                try:
                    kind, task_id, attempt, *rest = _decode(line)
                except (msgspec.DecodeError, ValueError):
                    log.warning("skipping an unreadable attempt log record", path=str(path))
                    continue  # a record cut short by a crash in the middle of its copy
                known = latest.get(task_id)
                if known is None or attempt > known.attempt:
                    known = latest[task_id] = LoggedAttempt(attempt)
                if kind == "handle" and attempt == known.attempt and rest:
                    known.handle = rest[0]
        return latest

    def reset(self) -> None:
        """Forget every record: the journal has committed all they told."""
        with contextlib.suppress(FileNotFoundError):
            self.previous_path.unlink()
        reopen = self._map is not None
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if reopen:
            self.open()

    def started(self, task_id: str, attempt: int) -> None:
        self._append(_encode(("started", task_id, attempt)))

    def handle(self, task_id: str, attempt: int, handle: dict[str, Any]) -> None:
        self._append(_encode(("handle", task_id, attempt, handle)))

    def _append(self, record: bytes) -> None:
        """Copy `record` in; OSError if there is no room for it on the disk."""
        if self._map is None:
            raise OSError(f"the attempt log {self.path} is not open")
        record += b"\n"
        end = self._position + len(record)
        if end > len(self._map):
            self._make_room(len(record))
            end = self._position + len(record)
        self._map[self._position : end] = record
        self._position = end

    def _make_room(self, needed: int) -> None:
        """Set the full file aside if the one before is committed; else grow it."""
        assert self._map is not None
        if self._journal.commits >= self._previous_covered_by:
            self.close()
            os.replace(self.path, self.previous_path)
            # What is recorded from now on goes into the batch after those taken so far.
            self._previous_covered_by = self._journal.next_batch
            self.open()
        if self._position + needed > len(self._map):
            size = max(2 * len(self._map), self._position + needed)
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            try:
                _allocate(fd, size)
            finally:
                os.close(fd)
            self._map.resize(size)


def _allocate(fd: int, size: int) -> None:
    """Give the file `size` bytes of disk (zeros past what it holds), or raise OSError:
    a page of a memory map with no disk behind it kills the process when written."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
    elif os.fstat(fd).st_size < size:
        os.ftruncate(fd, size)
