"""A shell on a pseudo-terminal, for `/ws/terminal` (seed 000).

The standard library does it: `os.openpty` for the pair, `TIOCSWINSZ` for the size, an
asyncio subprocess with an argument list for the shell. util-linux's `setsid --ctty`
runs first in the child (it then executes the shell in the same process): it makes the
shell a session leader with the terminal as its controlling terminal, which job control
and Ctrl-C need, without a `preexec_fn` (unsafe in a threaded server). The shell's
environment is made from nothing (the orchestrator's holds its own secrets).

`close` leaves nothing behind: SIGHUP to the shell's process group and to every process
of its session or below it (background jobs have groups of their own), then SIGKILL
after a short grace to whatever still runs. Only a process that left the session *and*
its parent (a daemon: `setsid` plus a double fork) escapes, as it would from a login.

Config (the instance's `[providers.host.terminal]`): `enabled` (false), `shell` (the
orchestrator's user's login shell, else `/bin/sh`), `recheck_interval` (seconds between
checks that the session's token still holds, 2).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import struct
import termios
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import anyio
import msgspec
import psutil

from providers.base import ProviderConfigError, ProviderError

Size = Annotated[int, msgspec.Meta(ge=1, le=1000)]
READ_CHUNK = 64 * 1024
GRACE = 1.0


class TerminalSize(msgspec.Struct, forbid_unknown_fields=True):
    cols: Size = 80
    rows: Size = 24


@dataclass(frozen=True, slots=True)
class TerminalConfig:
    enabled: bool = False
    shell: str = field(default_factory=lambda: login_shell())
    recheck_interval: float = 2.0

    @classmethod
    def of(cls, table: object) -> TerminalConfig:
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise ProviderConfigError("terminal must be a table")
        unknown = sorted(set(table) - {"enabled", "shell", "recheck_interval"})
        if unknown:
            raise ProviderConfigError(f"terminal: unknown settings {unknown}")
        enabled = table.get("enabled", False)
        if not isinstance(enabled, bool):
            raise ProviderConfigError("terminal.enabled: true or false")
        shell = table.get("shell", login_shell())
        if not isinstance(shell, str) or not os.path.isabs(shell):
            raise ProviderConfigError("terminal.shell: an absolute path")
        interval = table.get("recheck_interval", 2.0)
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise ProviderConfigError("terminal.recheck_interval: seconds")
        if not 0.05 <= interval <= 300:
            raise ProviderConfigError("terminal.recheck_interval: from 0.05 to 300 seconds")
        return cls(enabled, shell, float(interval))

    def shell_for(self, asked: str | None) -> str:
        """The shell to run: the configured one, or one the client names that the system
        lists as a login shell (`/etc/shells`); `ValueError` says why not."""
        if asked is None or asked == self.shell:
            return self.shell
        if asked not in system_shells():
            raise ValueError(f"shell: '{asked}' is not a login shell of this host (/etc/shells)")
        return asked


def login_shell() -> str:
    """The orchestrator's user's login shell when it is a real one, else /bin/sh."""
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        return "/bin/sh"
    if shell and os.path.isabs(shell) and os.access(shell, os.X_OK) and "nologin" not in shell:
        return shell
    return "/bin/sh"


def system_shells() -> set[str]:
    try:
        lines = Path("/etc/shells").read_text().splitlines()
    except OSError:
        return set()
    return {line.strip() for line in lines if line.strip().startswith("/")}


def set_size(fd: int, size: TerminalSize) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.rows, size.cols, 0, 0))


def _environment(shell: str) -> dict[str, str]:
    try:
        user = pwd.getpwuid(os.getuid())
        name, home = user.pw_name, user.pw_dir
    except KeyError:
        name, home = str(os.getuid()), "/"
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": home,
        "USER": name,
        "LOGNAME": name,
        "SHELL": shell,
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
    }


class Pty:
    """One shell on one pseudo-terminal. `read` and `write` are the terminal's bytes;
    `close` ends the shell and every process it left."""

    def __init__(self, master: int, process: asyncio.subprocess.Process, shell: str) -> None:
        self.master = master
        self.process = process
        self.shell = shell
        self.pid = process.pid
        self.bytes_in = 0
        self.bytes_out = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._closed = False

    @classmethod
    async def spawn(cls, shell: str, size: TerminalSize) -> Pty:
        setsid = shutil.which("setsid")
        if setsid is None:
            raise ProviderError("setsid (util-linux) is not installed on this host")
        if not os.access(shell, os.X_OK):
            raise ProviderError(f"the shell {shell} is not an executable on this host")
        master, slave = os.openpty()
        try:
            set_size(slave, size)
            env = _environment(shell)
            home = env["HOME"] if Path(env["HOME"]).is_dir() else "/"  # noqa: ASYNC240 (a stat)
            process = await asyncio.create_subprocess_exec(
                setsid,
                "--ctty",
                shell,
                "-i",
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                cwd=home,
                close_fds=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return cls(master, process, shell)

    def resize(self, size: TerminalSize) -> None:
        """The new size; the kernel tells the shell's foreground group (SIGWINCH)."""
        set_size(self.master, size)

    async def read(self) -> str | None:
        """What the terminal shows next, as text (None once the shell side is gone)."""
        while True:
            try:
                data = os.read(self.master, READ_CHUNK)
            except BlockingIOError:
                await anyio.wait_readable(self.master)
                continue
            except OSError:  # EIO: every process holding the terminal closed it
                data = b""
            if not data:
                return None
            self.bytes_out += len(data)
            text = self._decoder.decode(data)
            if text:
                return text

    async def write(self, data: bytes) -> None:
        """Type `data` (dropped once the shell side is gone: the session is ending)."""
        view = memoryview(data)
        while view and not self._closed:
            try:
                written = os.write(self.master, view)
            except BlockingIOError:
                await anyio.wait_writable(self.master)
                continue
            except OSError:  # EIO: no process holds the terminal any more
                return
            self.bytes_in += written
            view = view[written:]

    async def wait(self) -> int:
        return await self.process.wait()

    async def end_processes(self) -> None:
        """SIGHUP to the shell, its group, what it started and its session; SIGKILL to
        what still runs after `GRACE` seconds (see the module's note)."""
        left = _left_behind(self.pid)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGHUP)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + GRACE
        alive = [p for p in left if _running(p)]
        while alive and time.monotonic() < deadline:
            await anyio.sleep(0.02)
            alive = [p for p in alive if _running(p)]
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def close(self) -> int | None:
        """End the shell and whatever it started, and release the terminal; the shell's
        exit status (negative: the signal that ended it)."""
        with anyio.CancelScope(shield=True):
            if not self._closed:
                self._closed = True
                await self.end_processes()
                if self.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        self.process.kill()
                await self.process.wait()
                os.close(self.master)
        return self.process.returncode


def _running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _left_behind(leader: int) -> list[psutil.Process]:
    """The shell, everything below it, and every process of its session (a job whose
    parent left is still in the session)."""
    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        shell = psutil.Process(leader)
        found[leader] = shell
        for child in shell.children(recursive=True):
            found[child.pid] = child
    for pid in psutil.pids():
        if pid in found:
            continue
        try:
            if os.getsid(pid) == leader:
                found[pid] = psutil.Process(pid)
        except (OSError, psutil.Error):
            continue
    return list(found.values())
