"""The attempt log: which attempt of a task has begun, and its handle, known at once.

The embedded executor calls a provider without waiting for the commit of the task's
`Running` transition: waiting was about a tenth of the time to run a short command
(tests/perf/bench_executor.py, W3). What a restarted orchestrator needs to know of an
attempt that began is first appended here instead, with one `write` to a file in the
data directory, which outlives the process however it is killed:

- that the attempt began, so that it counts against the task's `max_attempts`;
- its handle, as soon as the provider gives one (a process group), so that whatever the
  attempt left running is stopped before the task runs again.

A restart reads the log before anything starts (`read`), recovers an attempt the store
does not know of as an interrupted `Running` one, and empties the log once the journal
has committed that (`reset`). A record is needed only until the journal has committed the
transition recorded with it, so the log is two files: when the current one grows past
`max_bytes`, it replaces the previous one, provided the journal has committed everything
recorded before the previous one was set aside (otherwise it grows a little longer).

Like the SQLite store in its default `synchronous=NORMAL` mode, the log survives the
orchestrator being killed, not the machine losing power; commands die with the machine.
"""

from __future__ import annotations

import contextlib
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
    def __init__(self, path: Path, journal: Journal, max_bytes: int = 4 << 20) -> None:
        self.path = path
        self.previous_path = path.with_name(path.name + ".1")
        self._journal = journal
        self._max_bytes = max_bytes
        self._fd: int | None = None
        self._size = 0
        #: The journal batch that covers every record of the previous file.
        self._previous_covered_by = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self) -> dict[str, LoggedAttempt]:
        """The latest attempt of every task in the log (both files, oldest first)."""
        latest: dict[str, LoggedAttempt] = {}
        for path in (self.previous_path, self.path):
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    kind, task_id, attempt, *rest = _decode(line)
                except (msgspec.DecodeError, ValueError):
                    log.warning("skipping an unreadable attempt log record", path=str(path))
                    continue  # a record cut short by a crash in the middle of its write
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
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
        self._size = 0

    def started(self, task_id: str, attempt: int) -> None:
        self._append(_encode(("started", task_id, attempt)))

    def handle(self, task_id: str, attempt: int, handle: dict[str, Any]) -> None:
        self._append(_encode(("handle", task_id, attempt, handle)))

    def _append(self, record: bytes) -> None:
        assert self._fd is not None, "the attempt log was not opened"
        record += b"\n"
        os.write(self._fd, record)  # one write: a record is whole, or cut short and skipped
        self._size += len(record)
        if self._size > self._max_bytes and self._journal.commits >= self._previous_covered_by:
            self._rotate()

    def _rotate(self) -> None:
        """The current file becomes the previous one; the one before is dropped (all it
        told is committed)."""
        assert self._fd is not None
        os.replace(self.path, self.previous_path)
        os.close(self._fd)
        self._fd = None
        # What is recorded from now on goes into the batch after those taken so far.
        self._previous_covered_by = self._journal.next_batch
        self.open()
