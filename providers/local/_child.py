"""A command's process, watched from the event loop: its output, its exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from providers.local._groups import boot_ticks

_DRAIN_SECONDS = 0.5  # how long output is still read once the command has exited
#: When a command's exit starts to be watched for on its own, if its output goes on.
_EXIT_WATCH_AFTER = 0.05
#: Wait for exits through pidfds (Linux 5.3+); elsewhere, a thread per running command.
_PIDFD = hasattr(os, "pidfd_open")
_DEVNULL: int | None = None


@dataclass(frozen=True, slots=True)
class Command:
    argv: tuple[str, ...]
    env: dict[str, str] | None
    cwd: Path
    explicit_cwd: bool


class Child:
    """A command started with `subprocess.Popen`, watched from the event loop.

    Its output is read from the pipe's read end, registered with the loop. Its exit is
    collected when the output ends (most commands end both together), or else through a
    pidfd registered with the loop, from `_EXIT_WATCH_AFTER` seconds after the start or
    from the output's end, whichever comes first: a short command costs no pidfd. No
    thread per child, no global child watcher, and none of the asyncio subprocess
    transport's machinery, which cost about a third of the time to run a short command
    (tests/perf/bench_executor.py, W3). Without pidfds (not Linux), a thread waits for
    the exit instead.

    The last `limit` bytes of output (stdout and stderr interleaved) are kept.
    """

    def __init__(self, command: Command, executable: str | None, limit: int) -> None:
        loop = asyncio.get_running_loop()
        self.limit = limit
        self.tail = bytearray()
        self.total = 0
        self.exited: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._waiters: list[asyncio.Future[None]] = []
        self._drain_timer: asyncio.TimerHandle | None = None
        self._exit_timer: asyncio.TimerHandle | None = None
        self._pidfd: int | None = None
        read, write = os.pipe()
        before = boot_ticks()
        try:
            self.process = subprocess.Popen(
                command.argv,
                executable=executable,
                stdin=devnull(),
                stdout=write,
                stderr=subprocess.STDOUT,
                env=command.env,
                cwd=command.cwd,
                start_new_session=True,
            )
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        self.pid = self.process.pid
        after = boot_ticks()
        #: When the kernel started it (/proc's start time is within), for `reap`; read
        #: from the clock rather than /proc, whose answer waits until exec is over.
        self.started_between = None if before is None or after is None else [before, after]
        self._output: int | None = read
        os.set_blocking(read, False)
        loop.add_reader(read, self._read)
        if _PIDFD:
            self._exit_timer = loop.call_later(_EXIT_WATCH_AFTER, self._watch_exit)
        else:
            threading.Thread(target=self._wait, name=f"wait-{self.pid}", daemon=True).start()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait(self) -> None:
        """Return once the command has exited and its output is read: to its end, or for
        `_DRAIN_SECONDS` after the exit when something it left running keeps the pipe
        open. A cancelled wait leaves the child as it was."""
        if self.exited.done() and self._output is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def close(self) -> None:
        """Stop reading output (a process still writing gets SIGPIPE); the exit is still
        collected when it comes, so no zombie is left."""
        if self._output is not None:
            self._loop.remove_reader(self._output)
            os.close(self._output)
            self._output = None
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self.exited.done():
            self._wake()
        elif _PIDFD:
            self._watch_exit()

    def text(self) -> str:
        body = self.tail.decode("utf-8", errors="replace")
        dropped = self.total - len(self.tail)
        return f"[output truncated: {dropped} earlier bytes dropped]\n{body}" if dropped else body

    def _read(self) -> None:
        assert self._output is not None
        try:
            chunk = os.read(self._output, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        self.total += len(chunk)
        self.tail += chunk
        if len(self.tail) > self.limit:
            del self.tail[: len(self.tail) - self.limit]

    def _watch_exit(self) -> None:
        """Collect the exit if it has happened; else watch for it through a pidfd."""
        if self._exit_timer is not None:
            self._exit_timer.cancel()
            self._exit_timer = None
        if self.exited.done() or self._pidfd is not None:
            return
        if self.process.poll() is not None:
            self._exited()
            return
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except OSError:  # out of descriptors, say: a thread waits instead
            self._pidfd = -1
            threading.Thread(target=self._wait, name=f"wait-{self.pid}", daemon=True).start()
            return
        self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        assert self._pidfd is not None
        self.process.poll()  # readable pidfd: the process has exited, this collects it
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._exited()

    def _wait(self) -> None:
        self.process.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._exited)

    def _exited(self) -> None:
        if self.exited.done():
            return
        self.exited.set_result(None)
        if self._output is None:
            self._wake()
        else:  # what is still in the pipe, or comes soon, is output too
            self._drain_timer = self._loop.call_later(_DRAIN_SECONDS, self.close)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def devnull() -> int:
    """One descriptor on /dev/null for every command's stdin, opened once."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL
