"""The attempt log keeps, per task, the latest attempt that began and its handle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.store.attempt_log import AttemptLog, LoggedAttempt

pytestmark = pytest.mark.backend_independent


@dataclass
class Batches:
    """What the log reads of its journal: the batches taken and committed so far."""

    taken: int = 0
    commits: int = 0

    @property
    def next_batch(self) -> int:
        return self.taken + 1


def opened(path: Path, batches: Batches | None = None, max_bytes: int = 1 << 20) -> AttemptLog:
    log = AttemptLog(path / "attempts.log", batches or Batches(), max_bytes)  # type: ignore[arg-type]
    log.open()
    return log


def test_the_latest_attempt_of_each_task_with_its_handle(tmp_path: Path) -> None:
    log = opened(tmp_path)
    log.started("a", 1)
    log.handle("a", 1, {"pid": 10})
    log.started("a", 2)  # a new attempt: the first one's handle is not its handle
    log.started("b", 1)
    log.handle("b", 1, {"pid": 20})
    log.close()
    assert opened(tmp_path).read() == {
        "a": LoggedAttempt(2, None),
        "b": LoggedAttempt(1, {"pid": 20}),
    }


def test_a_record_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    log = opened(tmp_path)
    log.started("a", 1)
    with (tmp_path / "attempts.log").open("r+b") as raw:
        raw.seek(raw.read().index(b"\0"))
        raw.write(b'["handle","a",1,{"pi')  # the process died in the middle of a copy
    assert log.read() == {"a": LoggedAttempt(1, None)}


def test_reset_forgets_everything(tmp_path: Path) -> None:
    log = opened(tmp_path, max_bytes=64)
    for attempt in range(1, 6):
        log.started("a", attempt)
    log.reset()
    assert log.read() == {}
    log.started("b", 1)  # appends from the start of the emptied file
    assert log.read() == {"b": LoggedAttempt(1)}
    assert not (tmp_path / "attempts.log.1").exists()


def test_a_full_log_is_set_aside_and_dropped_once_the_journal_has_committed_it(
    tmp_path: Path,
) -> None:
    batches = Batches()
    log = opened(tmp_path, batches, max_bytes=30)  # room for one 18-byte record
    log.started("a", 1)
    log.started("b", 1)  # does not fit: the file with `a` is set aside, nothing is lost
    assert (tmp_path / "attempts.log.1").exists()
    batches.taken = 1  # a batch holding what a and b recorded is being written
    log.started("c", 1)  # the file grows: the set-aside one is not committed yet
    log.started("d", 1)
    assert log.read().keys() == {"a", "b", "c", "d"}
    batches.commits = 1
    log.started("e", 1)  # now the older file may go
    assert log.read().keys() == {"b", "c", "d", "e"}
    log.close()
    reopened = opened(tmp_path, batches, max_bytes=30)
    reopened.started("f", 1)  # after the records already in the file
    assert reopened.read().keys() == {"b", "c", "d", "e", "f"}
