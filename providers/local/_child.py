"""A command's process, watched from the event loop: its start gate, its output, its exit."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from providers.local._groups import boot_ticks

#: Wait for exits through pidfds (Linux 5.3+); elsewhere, a thread per running command.
_PIDFD = hasattr(os, "pidfd_open")
_DEVNULL: int | None = None
#: What the provider writes to a gated command's wrapper to let the command start.
GO = b"go\n"
#: Output written past the kept tail before the spool gives it back to the file system.
_TRIM_STEP = 1 << 20
#: When a running command's spool is first looked at, and the bounds of the next looks
#: (sooner when it grows fast, so that about one step is written between two looks).
_TRIM_FIRST = 0.02
_TRIM_SOONEST = 0.01
_TRIM_LATEST = 1.0
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


#: The umask commands run with.
COMMAND_UMASK = 0o022


@dataclass(frozen=True, slots=True)
class Command:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    explicit_cwd: bool


class Spool:
    """Where a command's stdout and stderr go: a file, not a pipe.

    The command's writes never depend on a reader: when its orchestrator dies, the command
    goes on (a pipe would kill it with SIGPIPE at its next write), and what it printed can
    be read by the next one (`read_tail`). The file is opened by the provider (append
    only, mode 0600) and handed to the command as a descriptor. Without a `path` it has
    no name at all (a memfd): nothing to clean up, nothing to recover.

    Disk (or memory) use stays near `limit` bytes: what precedes the last `limit` bytes
    is given back while the command runs (a hole punched in the file, whose size still
    counts every byte written, so the truncation can be reported). File systems that
    cannot punch holes keep everything.
    """

    def __init__(self, path: Path | None, directory: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self._punched = 0
        self._can_punch = True
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        if path is not None:
            flags |= os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            try:
                self.fd = os.open(path, flags, 0o600)
            except FileExistsError:  # an earlier run's: a new file (not truncated, which
                path.unlink()  # ext4 would flush to disk when closed)
                self.fd = os.open(path, flags, 0o600)
            return
        self.fd = _anonymous_file(directory, flags)

    def trim(self, *, final: bool = False) -> int:
        """Give back to the file system what precedes the kept tail, by steps (or all of
        it, once the command has ended); return the file's size."""
        size = os.fstat(self.fd).st_size
        end = (size - self.limit) // 4096 * 4096
        step = 1 if final else _TRIM_STEP
        if self._can_punch and end - self._punched >= step:
            try:
                _punch_hole(self.fd, self._punched, end - self._punched)
                self._punched = end
            except OSError:
                self._can_punch = False
        return size

    def text(self) -> str:
        return read_tail(self.fd, self.limit)

    def close(self) -> None:
        os.close(self.fd)


def read_tail(fd: int, limit: int) -> str:
    """The last `limit` bytes of an output file, marked when earlier bytes were dropped."""
    size = os.fstat(fd).st_size
    start = max(0, size - limit)
    body = os.pread(fd, size - start, start).decode("utf-8", errors="replace")
    return f"[output truncated: {start} earlier bytes dropped]\n{body}" if start else body


class Child:
    """A command started with `subprocess.Popen`, watched from the event loop.

    Its output goes to a `Spool`. Its exit is watched through a pidfd registered with the
    loop: no thread per child, no global child watcher, none of the asyncio subprocess
    transport's machinery (which cost about a third of the time to run a short command,
    tests/perf/bench_executor.py, W3). Without pidfds (not Linux), a thread waits.

    A `gated` command is started with the read end of a pipe as its standard input: its
    wrapper waits for one line (`release`) before it runs the command, and runs nothing
    if the pipe closes first (`close`, or this process dying).
    """

    def __init__(
        self, command: Command, executable: str | None, spool: Spool, *, gated: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        self.spool = spool
        self.exited: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._pidfd: int | None = None
        self._gate: int | None = None
        self._trim_timer: asyncio.TimerHandle | None = None
        self._trim_delay = _TRIM_FIRST
        self._size_seen = 0
        stdin = devnull()
        if gated:
            stdin, self._gate = os.pipe()
        before = boot_ticks()
        try:
            self.process = subprocess.Popen(
                command.argv,
                executable=executable,
                stdin=stdin,
                stdout=spool.fd,
                stderr=spool.fd,
                env=command.env,
                cwd=command.cwd,
                start_new_session=True,
                # The service runs with umask 077 (its data directory is private); what
                # a command creates gets the usual permissions.
                umask=COMMAND_UMASK,
            )
        except BaseException:
            self._close_gate()
            raise
        finally:
            if gated:
                os.close(stdin)
        self.pid = self.process.pid
        after = boot_ticks()
        #: When the kernel started it (/proc's start time is within), for `reap`; read
        #: from the clock rather than /proc, whose answer waits until exec is over.
        self.started_between = None if before is None or after is None else [before, after]
        self._watch_exit()
        if not self.exited.done():
            self._trim_timer = loop.call_later(_TRIM_FIRST, self._trim)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def release(self) -> None:
        """Let a gated command start (a no-op for one that is not gated)."""
        if self._gate is not None:
            with contextlib.suppress(BrokenPipeError):  # its wrapper was killed meanwhile
                os.write(self._gate, GO)
            self._close_gate()

    async def wait(self) -> None:
        """Return once the command has exited. A cancelled wait leaves it as it was."""
        await asyncio.shield(self.exited)

    def close(self) -> None:
        """Stop looking after the spool; a gated command not yet released never starts.
        The exit is still collected when it comes, so no zombie is left."""
        self._close_gate()
        if self._trim_timer is not None:
            self._trim_timer.cancel()
            self._trim_timer = None

    def _close_gate(self) -> None:
        if self._gate is not None:
            os.close(self._gate)
            self._gate = None

    def _trim(self) -> None:
        size = self.spool.trim()
        grown, self._size_seen = size - self._size_seen, size
        # Look again about when another step's worth will have been written.
        delay = self._trim_delay * _TRIM_STEP / grown if grown > 0 else _TRIM_LATEST
        self._trim_delay = min(_TRIM_LATEST, max(_TRIM_SOONEST, delay))
        self._trim_timer = self._loop.call_later(self._trim_delay, self._trim)

    def _watch_exit(self) -> None:
        """Collect the exit if it has happened; else watch for it through a pidfd."""
        if self.process.poll() is not None:
            self._exited()
            return
        if _PIDFD:
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except OSError:  # out of descriptors, say: a thread waits instead
                pass
            else:
                self._loop.add_reader(self._pidfd, self._reap)
                return
        threading.Thread(target=self._wait, name=f"wait-{self.pid}", daemon=True).start()

    def _reap(self) -> None:
        assert self._pidfd is not None
        self.process.poll()  # readable pidfd: the process has exited, this collects it
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self._exited()

    def _wait(self) -> None:
        self.process.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._exited)

    def _exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
        if self._trim_timer is not None:
            self._trim_timer.cancel()
            self._trim_timer = None


def devnull() -> int:
    """One descriptor on /dev/null for every command's stdin, opened once."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL


def _anonymous_file(directory: Path, flags: int) -> int:
    """A file without a name: in memory (a memfd: no file system to write a new inode to,
    which cost more than the rest of starting a short command on ext4), else in
    `directory`."""
    with contextlib.suppress(AttributeError, OSError):
        fd = os.memfd_create("provisioning-output", os.MFD_CLOEXEC)
        fcntl.fcntl(fd, fcntl.F_SETFL, os.O_APPEND)
        return fd
    with contextlib.suppress(AttributeError, OSError):
        return os.open(directory, flags | os.O_TMPFILE, 0o600)
    fd, name = tempfile.mkstemp(prefix=".spool-", dir=directory)  # 0600, O_EXCL, no symlink
    os.unlink(name)
    fcntl.fcntl(fd, fcntl.F_SETFL, os.O_APPEND)
    return fd


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_FALLOCATE = _load_fallocate()


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the disk blocks of a range of the file; its size stays (Linux's fallocate)."""
    if _FALLOCATE is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate is not available")
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _FALLOCATE(fd, mode, offset, length) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
