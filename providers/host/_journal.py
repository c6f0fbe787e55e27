"""The `log_entry` kind: the systemd journal, queried (policies: `logs:*`).

`journalctl --output=json` does the reading: it knows every journal file format and
the matches (`-u` for a unit's messages, whichever field names it; `-p` for a priority
and those more severe), where a Python binding (`systemd.journal`) would add a compiled
dependency for the same reads. The instance's `journal.file` or `journal.directory` names
what to read (absent: the system's journal), which is how the tests read a journal file
they wrote with `systemd-journal-remote`.

The answer is seed 000's: `logs[{timestamp, priority, unit, message, hostname, pid}]`,
newest first, with the `total_count` of matching entries and the page asked for. The
count is read from the journal files' own indexes (`_journal_index`), or, where that
reader cannot count, by journalctl's walk through the matches (`Counts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from providers.base import JSON, InvalidParams, Kind, Operation, ProviderConfigError, ProviderError
from providers.host import _journal_index

MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")
PRIORITIES = ("emergency", "alert", "critical", "error", "warning", "notice", "info", "debug")
Priority = Literal["emergency", "alert", "critical", "error", "warning", "notice", "info", "debug"]
Unit = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9@_.:\\-]{1,128}$")]
Timestamp = Annotated[str, msgspec.Meta(max_length=40, description="ISO 8601")]
MAX_PAGE_SIZE = 1000


class LogQuery(msgspec.Struct, forbid_unknown_fields=True):
    #: A unit (`sshd` means `sshd.service`).
    service: Unit | None = None
    #: This priority and the more severe ones.
    priority: Priority | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None
    page: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    page_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE_SIZE)] = 100


KIND = Kind(
    "log_entry",
    "logs",
    (Operation("query", LogQuery, mutates=False, summary="journal entries, filtered and paged"),),
    key=None,
    summary="the systemd journal (read-only)",
)


@dataclass(frozen=True, slots=True)
class JournalConfig:
    file: Path | None = None
    directory: Path | None = None

    @classmethod
    def of(cls, table: object) -> JournalConfig:
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise ProviderConfigError("journal must be a table")
        unknown = sorted(set(table) - {"file", "directory"})
        if unknown:
            raise ProviderConfigError(f"journal: unknown settings {unknown}")
        file, directory = table.get("file"), table.get("directory")
        for name, value in (("file", file), ("directory", directory)):
            if value is not None and (not isinstance(value, str) or not os.path.isabs(value)):
                raise ProviderConfigError(f"journal.{name}: an absolute path")
        if file is not None and directory is not None:
            raise ProviderConfigError("journal: a file or a directory, not both")
        return cls(Path(file) if file else None, Path(directory) if directory else None)

    def source(self) -> list[str]:
        if self.file is not None:
            return [f"--file={self.file}"]
        if self.directory is not None:
            return [f"--directory={self.directory}"]
        return []

    def unavailable(self) -> str | None:
        """Why no journal can be read (None: it can)."""
        if shutil.which("journalctl") is None:
            return "journalctl is not installed on this host"
        if self.file is not None and not self.file.is_file():
            return f"the journal file {self.file} does not exist"
        if self.directory is not None and not self.directory.is_dir():
            return f"the journal directory {self.directory} does not exist"
        if (
            self.file is None
            and self.directory is None
            and not any(Path(p).is_dir() for p in ("/var/log/journal", "/run/log/journal"))
        ):
            return "this host keeps no systemd journal (/var/log/journal, /run/log/journal)"
        return None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def microseconds(value: str, field: str) -> int:
    """An ISO 8601 time in microseconds since the epoch (UTC when no offset is given)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParams(field, f"'{value}' is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    # (no journal holds an entry before 1970: an earlier time is 1970's first moment)
    return max(0, (parsed - EPOCH) // timedelta(microseconds=1))


def moment(value: str, field: str) -> str:
    """An ISO 8601 time as journalctl's `@<seconds>`, to the microsecond the index counts
    with (`_journal_index`)."""
    seconds, micros = divmod(microseconds(value, field), 1_000_000)
    return f"@{seconds}.{micros:06d}"


def window(query: LogQuery) -> tuple[int | None, int | None]:
    """`since` and `until` in microseconds since the epoch (None: not given)."""
    since = microseconds(query.since, "since") if query.since is not None else None
    until = microseconds(query.until, "until") if query.until is not None else None
    return since, until


def check(query: LogQuery) -> None:
    since, until = window(query)
    if since is not None and until is not None and since > until:
        raise InvalidParams("until", f"'{query.until}' is before since '{query.since}'")


def matches(query: LogQuery, *, since: bool = True) -> list[str]:
    """journalctl's arguments selecting the entries `query` asks for (without `--since`
    where a cursor already starts later)."""
    argv = []
    if query.service is not None:
        argv += ["--unit", query.service]
    if query.priority is not None:
        argv += ["--priority", str(PRIORITIES.index(query.priority))]
    if query.since is not None and since:
        argv += ["--since", moment(query.since, "since")]
    if query.until is not None:
        argv += ["--until", moment(query.until, "until")]
    return argv


def command(config: JournalConfig, query: LogQuery) -> list[str]:
    """The page: the newest `page * page_size` matches, newest first, as JSON (journalctl
    stops there: a first page reads a hundred entries whatever the journal's size)."""
    last = query.page * query.page_size
    return [
        "journalctl",
        "--no-pager",
        "--output=json",
        "--reverse",
        "--quiet",
        f"--lines={last}",
        *config.source(),
        *matches(query),
    ]


def count_command(config: JournalConfig, query: LogQuery, after: str | None = None) -> list[str]:
    """Every match (after the cursor `after`), as one short line each: `_BOOT_ID` in the
    `cat` format (a field journald writes on every entry), so counting costs journalctl's
    walk through the matches and little more (a tenth of formatting JSON); then the last
    one's cursor (`--show-cursor`)."""
    return [
        "journalctl",
        "--no-pager",
        "--output=cat",
        "--output-fields=_BOOT_ID",
        "--show-cursor",
        "--quiet",
        *config.source(),
        # journalctl takes one start: the cursor (a match, so after `since`) or `since`.
        *matches(query, since=after is None),
        *([f"--after-cursor={after}"] if after else []),
    ]


@dataclass(slots=True)
class _Counted:
    total: int
    #: The last match counted (None: there was none).
    cursor: str | None
    #: The journal files counted, by inode.
    files: frozenset[int]
    #: When every match was last counted (monotonic).
    full_at: float


class Counts:
    """The matches of recent filters, counted once where journalctl counts them (the
    index reader could not): journal files are only appended to
    (and removed whole), so while every file counted is still there, a filter's count is
    the one before plus the matches after its last cursor. Paging through a filter walks
    its matches once, not once a page. An entry that sorts before the cursor when it is
    written (a late remote source in a directory of several) is missed until the next
    full count, at most `FULL_EVERY` seconds later."""

    SIZE = 256
    FULL_EVERY = 300.0

    def __init__(self) -> None:
        self._counted: OrderedDict[tuple[str, ...], _Counted] = OrderedDict()

    async def count(self, config: JournalConfig, query: LogQuery) -> tuple[int, str | None]:
        """The matches of `query`, and journalctl's complaint if it failed: read from the
        files' indexes (`_journal_index`), else counted by journalctl's walk."""
        try:
            return await asyncio.to_thread(_indexed_count, config, query), None
        except _journal_index.Unsupported:
            pass
        key = (*config.source(), *matches(query))
        files = await asyncio.to_thread(_journal_files, config)
        known = self._counted.get(key)
        if known is not None and (
            not known.files <= files or time.monotonic() - known.full_at > self.FULL_EVERY
        ):
            known = None  # a file was removed (vacuumed), or it is time: count again
        after = known.cursor if known is not None else None
        more, cursor, error = await _count(count_command(config, query, after))
        if error is not None:
            return more, error
        total = more + (known.total if known is not None else 0)
        full_at = known.full_at if known is not None else time.monotonic()
        self._counted[key] = _Counted(total, cursor or after, files, full_at)
        self._counted.move_to_end(key)
        while len(self._counted) > self.SIZE:
            self._counted.popitem(last=False)
        return total, None


def _indexed_count(config: JournalConfig, query: LogQuery) -> int:
    level = PRIORITIES.index(query.priority) if query.priority is not None else None
    groups = _journal_index.groups(query.service, level)
    since, until = window(query)
    try:
        paths = journal_paths(config)
    except OSError as error:
        raise _journal_index.Unsupported(str(error)) from None
    return _journal_index.count(paths, groups, since, until)


def journal_paths(config: JournalConfig) -> list[Path]:
    """The files journalctl reads: the file; or a directory's journal files and those of
    its machine-id subdirectories; or the system journal's files of this machine (as root,
    without `--merge`)."""
    if config.file is not None:
        return [config.file]
    if config.directory is not None:
        roots = [config.directory]
        roots += [p for p in config.directory.iterdir() if MACHINE_ID.match(p.name) and p.is_dir()]
    else:
        try:
            machine = Path("/etc/machine-id").read_text().strip()
        except OSError:
            machine = ""
        roots = [Path(base, machine) for base in ("/var/log/journal", "/run/log/journal")]
        roots = [root for root in roots if machine and root.is_dir()]
    return sorted(p for root in roots for g in ("*.journal", "*.journal~") for p in root.glob(g))


def _journal_files(config: JournalConfig) -> frozenset[int]:
    found = set()
    for path in journal_paths(config):
        with contextlib.suppress(OSError):
            found.add(path.stat().st_ino)
    return frozenset(found)


async def query(config: JournalConfig, params: Mapping[str, Any], counts: Counts) -> JSON:
    """The page asked for and the count of every match; `{"unavailable": reason}` when
    there is no journal to read. The page and the count (`Counts`) are read by two
    journalctl processes at once."""
    reason = config.unavailable()
    if reason is not None:
        return {"unavailable": reason}
    asked = msgspec.convert(params, LogQuery)
    first = (asked.page - 1) * asked.page_size
    (lines, page_error), (total, count_error) = await asyncio.gather(
        _page(command(config, asked), first), counts.count(config, asked)
    )
    if page_error is not None and not lines:
        raise ProviderError(f"journalctl: {page_error}")
    if count_error is not None and not total:
        raise ProviderError(f"journalctl: {count_error}")
    logs = [entry(json.loads(line)) for line in lines]
    if logs:  # (an entry without `_BOOT_ID`, which journald never writes, is not counted)
        total = max(total, first + len(logs))
    return {
        "logs": logs,
        "total_count": total,
        "page": asked.page,
        "page_size": asked.page_size,
    }


async def _page(argv: list[str], skip: int) -> tuple[list[bytes], str | None]:
    """The lines after the first `skip`, and journalctl's complaint if it failed."""
    process = await _journalctl(argv, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    assert process.stderr is not None
    lines: list[bytes] = []
    seen = 0
    try:
        async for line in process.stdout:
            if seen >= skip:
                lines.append(line)
            seen += 1
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return lines, await _ended(process)


CURSOR = b"-- cursor: "


async def _count(argv: list[str]) -> tuple[int, str | None, str | None]:
    """How many entries journalctl lists (lines counted by the chunk, not one by one),
    the last one's cursor, and journalctl's complaint if it failed."""
    process = await _journalctl(argv, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    total, tail = 0, b""
    try:
        while chunk := await process.stdout.read(1 << 20):
            total += chunk.count(b"\n")
            tail = (tail + chunk)[-4096:]
    except BaseException:
        process.kill()
        await process.wait()
        raise
    cursor = None
    last = tail.rstrip(b"\n").rpartition(b"\n")[2]
    if last.startswith(CURSOR):
        total -= 1
        cursor = last.removeprefix(CURSOR).decode(errors="replace").strip()
    return total, cursor, await _ended(process)


async def _ended(process: asyncio.subprocess.Process) -> str | None:
    assert process.stderr is not None
    err = await process.stderr.read()
    await process.wait()
    # Silent failure is how journalctl says "nothing": `--show-cursor` with no match
    # shown exits with 1 and says nothing.
    if process.returncode in (0, None) or not err.strip():
        return None
    return err.decode(errors="replace").strip()


class LogFilters(msgspec.Struct, forbid_unknown_fields=True):
    """What `/ws/logs` follows: `{"type": "subscribe", "payload": {"filters": …}}`."""

    unit: Unit | None = None
    #: This priority and the more severe ones.
    priority: Priority | None = None
    #: Keep streaming what is written from now on (else: the last `lines`, then the end).
    follow: bool = True
    #: How many of the latest matching entries come first.
    lines: Annotated[int, msgspec.Meta(ge=0, le=MAX_PAGE_SIZE)] = 10


async def follow(config: JournalConfig, filters: LogFilters) -> AsyncIterator[JSON]:
    """The latest matching entries, oldest first, then (with `follow`) each new one as
    journalctl sees it written; the journalctl process ends with the iteration."""
    reason = config.unavailable()
    if reason is not None:
        raise ProviderError(f"no journal to read: {reason}")
    argv = ["journalctl", "--no-pager", "--output=json", "--quiet", *config.source()]
    argv += ["--lines", str(filters.lines)]
    if filters.follow:
        argv.append("--follow")
    if filters.unit is not None:
        argv += ["--unit", filters.unit]
    if filters.priority is not None:
        argv += ["--priority", str(PRIORITIES.index(filters.priority))]
    process = await _journalctl(argv, stderr=asyncio.subprocess.DEVNULL)
    assert process.stdout is not None
    try:
        async for line in process.stdout:
            yield entry(json.loads(line))
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _journalctl(argv: list[str], *, stderr: int) -> asyncio.subprocess.Process:
    """journalctl with its JSON lines on a pipe (an entry may be long), in UTC and the C
    locale, reading nothing."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"},
        limit=1 << 24,
    )


def _text(value: Any) -> str:
    if isinstance(value, list):  # journalctl's JSON for a binary field: its bytes
        return bytes(v for v in value if isinstance(v, int)).decode(errors="replace")
    return "" if value is None else str(value)


def entry(record: Mapping[str, Any]) -> JSON:
    micros = int(record.get("__REALTIME_TIMESTAMP") or 0)
    stamp = datetime.fromtimestamp(micros / 1e6, UTC).isoformat().replace("+00:00", "Z")
    priority = str(record.get("PRIORITY"))
    level = PRIORITIES[int(priority)] if priority.isdigit() and int(priority) < 8 else None
    unit = record.get("_SYSTEMD_UNIT") or record.get("UNIT") or record.get("SYSLOG_IDENTIFIER")
    pid = str(record.get("_PID") or record.get("SYSLOG_PID"))
    return {
        "timestamp": stamp,
        "priority": level,
        "unit": _text(unit).removesuffix(".service") or None,
        "message": _text(record.get("MESSAGE")),
        "hostname": record.get("_HOSTNAME"),
        "pid": int(pid) if pid.isdigit() else None,
    }
