"""`total_count` read from the journal files' indexes (`providers/host/_journal_index.py`)
is journalctl's own count: checked against journalctl's walk for random filters over
journals holding every kind of entry `--unit` matches; where the reader cannot count
(a compressed value, a file it does not know), the walk counts instead."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.host import _journal as journal
from providers.host import _journal_index as index
from tests.host.journal import REMOTE, require_journal_tools

START = datetime(2025, 9, 1, tzinfo=UTC)
UNITS = ["sshd", "cron", "a.b", "x@y", "user.slice", "db.socket"]
#: What `--unit` is asked for: the units written, some never written, odd valid names.
ASKED = [*UNITS, "x@y.service", "sshd.service", "absent", "user", "-.mount", "a\\x2db"]
COREDUMP = "fc2e22bc6ee647b6b90729ab34a250b1"


def _entry(i: int, file: int) -> dict[str, str]:
    """Entry i of file `file`: most are a unit's own messages; one in seven is PID 1's
    about a unit, one in eleven a privileged daemon's (or, every other time, an
    unprivileged one's), one in thirteen a core dump; some carry no priority."""
    unit = UNITS[(i * 7 + file) % len(UNITS)]
    name = unit if "." in unit.rpartition("@")[2] else f"{unit}.service"
    fields = {
        "__REALTIME_TIMESTAMP": str(int((START + timedelta(minutes=i)).timestamp() * 1e6)),
        # (one boot of one machine a file: monotonic time goes with the clock)
        "__MONOTONIC_TIMESTAMP": str(1_000_000 + i * 60_000_000),
        "_BOOT_ID": f"{file:032x}",
        "MESSAGE": f"entry {i} of file {file}",
        "_HOSTNAME": "index-test",
    }
    if i % 17:
        fields["PRIORITY"] = str(i % 8)
    if i % 7 == 0:
        fields |= {"_PID": "1", "UNIT": name, "_UID": "0"}
    elif i % 11 == 0:
        fields |= {"_PID": str(400 + i), "OBJECT_SYSTEMD_UNIT": name, "_UID": str(i % 2 * 1000)}
    elif i % 13 == 0:
        fields |= {"_PID": str(500 + i), "MESSAGE_ID": COREDUMP, "_UID": "0"}
        fields |= {"COREDUMP_UNIT": name}
    else:
        fields |= {"_PID": str(1000 + i % 50), "_SYSTEMD_UNIT": name, "_UID": str(i % 3)}
        if i % 5 == 0:
            fields["_SYSTEMD_SLICE"] = "user.slice"
    return fields


def write(path: Path, entries: list[dict[str, str]]) -> None:
    source = path.with_suffix(".export")
    source.write_text(
        "\n".join("".join(f"{k}={v}\n" for k, v in e.items()) for e in entries) + "\n"
    )
    subprocess.run([str(REMOTE), f"--output={path}", str(source)], check=True, timeout=60)
    source.unlink()


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two journal files in one directory: 1,500 entries a minute apart, and 500 more
    from another machine (another file, another boot) over the same hours."""
    require_journal_tools()
    target = tmp_path_factory.mktemp("index")
    write(target / "first.journal", [_entry(i, 0) for i in range(1500)])
    write(target / "second.journal", [_entry(i * 3, 1) for i in range(500)])
    return target


def walked(config: journal.JournalConfig, query: journal.LogQuery) -> int:
    """journalctl's count: every match listed, one line each."""
    total, _, error = asyncio.run(journal._count(journal.count_command(config, query)))
    assert error is None, error
    return total


def indexed(config: journal.JournalConfig, query: journal.LogQuery) -> int:
    return journal._indexed_count(config, query)


def moment(minutes: int) -> str:
    return (START + timedelta(minutes=minutes, seconds=minutes % 3 * 20)).isoformat()


@st.composite
def queries(draw: st.DrawFn) -> journal.LogQuery:
    """A filter: a unit, a priority, and a time window (on entries, between them, or
    beyond either end), each or none."""
    first, last = sorted(draw(st.lists(st.integers(-30, 1600), min_size=2, max_size=2)))
    return journal.LogQuery(
        service=draw(st.none() | st.sampled_from(ASKED)),
        priority=draw(st.none() | st.sampled_from(journal.PRIORITIES)),
        since=draw(st.none() | st.just(moment(first))),
        until=draw(st.none() | st.just(moment(last))),
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=queries())
def test_the_index_counts_what_journalctl_lists(directory: Path, query: journal.LogQuery) -> None:
    config = journal.JournalConfig(directory=directory)
    assert indexed(config, query) == walked(config, query)


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"service": "sshd"},
        {"service": "user.slice"},
        {"service": "x@y", "priority": "warning"},
        {"priority": "error", "since": START.isoformat()},
        {"since": START.isoformat(), "until": START.isoformat()},
        {"until": (START + timedelta(hours=5, seconds=30)).isoformat()},
    ],
)
def test_each_kind_of_filter_and_one_file_alone(directory: Path, query: dict) -> None:
    """Named cases beside the random ones (each with matches), on the directory and on
    one of its files."""
    asked = journal.LogQuery(**query)
    for config in (
        journal.JournalConfig(directory=directory),
        journal.JournalConfig(file=directory / "first.journal"),
    ):
        total = indexed(config, asked)
        assert total == walked(config, asked)
        assert total > 0


@pytest.fixture
def compressed(tmp_path: Path, directory: Path) -> Path:
    """The directory's journal, and a file whose UNIT value is long enough to be stored
    compressed (journald compresses values of 512 bytes and more)."""
    target = tmp_path / "compressed"
    shutil.copytree(directory, target)
    long = {**_entry(7, 2), "UNIT": "z" * 2000 + ".service"}
    write(target / "long.journal", [long, _entry(14, 2)])
    return target


def test_what_the_index_cannot_read_is_counted_by_journalctl(compressed: Path) -> None:
    config = journal.JournalConfig(directory=compressed)
    asked = journal.LogQuery(service="sshd")
    with pytest.raises(index.Unsupported, match="compressed UNIT"):
        indexed(config, asked)
    counts = journal.Counts()
    total, error = asyncio.run(counts.count(config, asked))
    assert error is None and total == walked(config, asked) > 0
    # The walk's counts are kept (`Counts`): a file written later is counted from the
    # last cursor on; a file removed makes the count again.
    later = compressed / "later.journal"
    write(later, [{**_entry(2000, 3), "_SYSTEMD_UNIT": "sshd.service"}])  # the newest
    assert asyncio.run(counts.count(config, asked)) == (total + 1, None)
    later.unlink()
    assert asyncio.run(counts.count(config, asked)) == (total, None)
    # Counting priorities alone never reads the UNIT values: the index still counts.
    by_priority = journal.LogQuery(priority="error")
    assert indexed(config, by_priority) == walked(config, by_priority)


def test_a_file_that_is_not_a_journal_is_not_counted_by_the_index(tmp_path: Path) -> None:
    (tmp_path / "x.journal").write_bytes(b"LPKSHHRH" + b"\xff" * 300)
    (tmp_path / "y.journal").write_bytes(b"not a journal")
    for name in ("x.journal", "y.journal"):
        config = journal.JournalConfig(file=tmp_path / name)
        with pytest.raises(index.Unsupported):
            indexed(config, journal.LogQuery(service="sshd"))


@pytest.fixture
def damaged(tmp_path: Path, directory: Path) -> Path:
    path = tmp_path / "damaged.journal"
    shutil.copy(directory / "first.journal", path)
    return path


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(at=st.integers(0, 200_000), garbage=st.binary(min_size=8, max_size=64))
def test_a_damaged_file_never_breaks_the_count(damaged: Path, at: int, garbage: bytes) -> None:
    """Bytes overwritten anywhere: the index counts or says it cannot (never another
    error, never a loop)."""
    data = bytearray(damaged.read_bytes())
    at %= len(data) - len(garbage)
    data[at : at + len(garbage)] = garbage
    copy = damaged.with_name("copy.journal")
    copy.write_bytes(bytes(data))
    query = journal.LogQuery(service="sshd", priority="error", since=START.isoformat())
    with contextlib.suppress(index.Unsupported):
        indexed(journal.JournalConfig(file=copy), query)


@pytest.mark.parametrize("unit", [".service", "@x"])
def test_names_journalctl_mangles_are_counted_by_journalctl(directory: Path, unit: str) -> None:
    config = journal.JournalConfig(directory=directory)
    asked = journal.LogQuery(service=unit)
    with pytest.raises(index.Unsupported, match="not counted here"):
        indexed(config, asked)
    assert asyncio.run(journal.Counts().count(config, asked)) == (walked(config, asked), None)
