"""Run commands on the orchestrator's host, confined to the task's workspace.

One action, `run`, executes an argument list (never a shell) in its own session, so
that the whole process group can be stopped on cancellation, on timeout, or by a later
orchestrator through `reap`. Output (stdout and stderr interleaved) is kept up to a
bound, tail first. Processes the command leaves running in the background once it has
exited are not killed, as a shell would not kill them.

`PR_SET_PDEATHSIG` is deliberately not used: any `preexec_fn` makes CPython fork
instead of vfork, which made spawning about three times slower; `reap` covers the case
of an orchestrator that died while a command ran.

With `record_exit = true`, each command runs under a fixed `/bin/sh` wrapper (the
command's own arguments are passed as arguments, never parsed by the shell) that writes
its exit status to `<state_dir>/<task id>.<attempt>.exit` when it ends, whether or not
its orchestrator is still alive. An attempt whose orchestrator or worker was killed is
then recorded from that file (`finished`) instead of being run again: exactly once for
commands that finished, at the cost of one more process per command. Files are kept
(a few bytes each) for seven days: a worker taking over an expired lease may need the
file of an attempt whose end its first worker had not committed yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeGuard

from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    PermanentProviderError,
    ProviderConfigError,
    ProviderError,
)

_CONFIG_KEYS = frozenset(
    {"inherit_env", "max_output_bytes", "kill_grace", "record_exit", "state_dir"}
)
#: Runs "$@" and writes its exit status to $1 (`record_exit`): no user text is parsed.
_EXIT_WRAPPER = 'f=$1; shift; "$@"; c=$?; echo "$c" > "$f"; exit "$c"'
#: How long an exit status is kept for a recovery that needs it (a server down that long).
_EXIT_FILE_DAYS = 7
_RECOVERED_OUTPUT = (
    "[recovered: the command exited 0 after the worker running it stopped; its output was not kept]"
)
_COMMAND_KEYS = frozenset({"command", "args", "env", "cwd"})
_MINIMAL_ENV = ("PATH", "HOME", "LANG")
_DRAIN_SECONDS = 0.5  # how long output is still read once the command has exited
#: When a command's exit starts to be watched for on its own, if its output goes on.
_EXIT_WATCH_AFTER = 0.05
_POLL_SECONDS = 0.05
_ERROR_TAIL_LINES = 10
#: Wait for exits through pidfds (Linux 5.3+); elsewhere, a thread per running command.
_PIDFD = hasattr(os, "pidfd_open")
_DEVNULL: int | None = None
_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class _Command:
    argv: tuple[str, ...]
    env: dict[str, str] | None
    cwd: Path
    explicit_cwd: bool


class _Child:
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

    def __init__(self, command: _Command, executable: str | None, limit: int) -> None:
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
        before = _boot_ticks()
        try:
            self.process = subprocess.Popen(
                command.argv,
                executable=executable,
                stdin=_devnull(),
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
        after = _boot_ticks()
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


def _devnull() -> int:
    """One descriptor on /dev/null for every command's stdin, opened once."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _DEVNULL


@dataclass(slots=True)
class _Running:
    pid: int | None = None  # None while starting
    cancelled: bool = False


class LocalProvider:
    """Runs `run` actions as local processes.

    Config: `inherit_env` (default true: the command sees the orchestrator's whole
    environment; false: only PATH, HOME and LANG), `max_output_bytes` (default 64 KiB,
    the tail is kept), `kill_grace` (default 2 s between SIGTERM and SIGKILL),
    `record_exit` (default false; see the module's docstring) and `state_dir` (where exit
    statuses are written; default `<temp dir>/provisioning-local-<uid>`, on this host).

    Params of `run`: `command` (required), `args` (list of strings), `env` (merged over
    the inherited environment), `cwd` (relative to the workspace, which it may not
    leave, symlinks included), `undo` (a command of the same shape, run by `compensate`).
    Other params (the name of what the command acts on, …) are ignored; `shell` is refused.
    """

    type_name: ClassVar[str] = "local"
    touches_host: ClassVar[bool] = True

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            raise ProviderConfigError(f"unknown settings {unknown}")
        inherit = config.get("inherit_env", True)
        limit = config.get("max_output_bytes", 64 * 1024)
        grace = config.get("kill_grace", 2.0)
        if not isinstance(inherit, bool):
            raise ProviderConfigError("inherit_env must be a boolean")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ProviderConfigError("max_output_bytes must be a positive integer")
        if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
            raise ProviderConfigError("kill_grace must be >= 0")
        record_exit = config.get("record_exit", False)
        if not isinstance(record_exit, bool):
            raise ProviderConfigError("record_exit must be a boolean")
        state_dir = config.get(
            "state_dir", str(Path(tempfile.gettempdir()) / f"provisioning-local-{os.getuid()}")
        )
        if not isinstance(state_dir, str) or not state_dir:
            raise ProviderConfigError("state_dir must be a path")
        self.record_exit = record_exit
        self.state_dir = Path(state_dir)
        self._collected_at = 0.0
        self.name = name
        self.inherit_env = inherit
        self.max_output_bytes = limit
        self.kill_grace = float(grace)
        self._running: dict[str, _Running] = {}
        self._roots: dict[Path, Path] = {}  # workspace -> its resolved path
        # (name, PATH) -> where the name was found: looked up once, as a shell's hash
        # table does, and again only once that file is gone.
        self._lookups: dict[tuple[str, str], str] = {}

    async def apply(self, call: ActionCall) -> ActionResult:
        """Run the command; exit status 0 succeeds, anything else raises `ProviderError`."""
        command, undo = self._parse_call(call)
        output, pid = await self._run(call, command)
        return ActionResult(
            output=output, result={"exit_code": 0, "pid": pid}, reversible=undo is not None
        )

    async def compensate(self, call: ActionCall, applied: ActionResult) -> ActionResult:
        """Run the `undo` command; without one the run is irreversible."""
        _, undo = self._parse_call(call)
        if undo is None:
            raise PermanentProviderError("irreversible: the command was given no `undo`")
        output, pid = await self._run(call, undo)
        return ActionResult(output=output, result={"exit_code": 0, "pid": pid}, reversible=False)

    async def check(self, call: ActionCall) -> ActionResult:
        """Validate the params and say what would run; nothing is executed."""
        command, undo = self._parse_call(call)
        for cmd in (command, undo):
            if cmd is not None and _resolve_executable(cmd) is None:
                raise PermanentProviderError(f"command not found: {cmd.argv[0]!r}")
        return ActionResult(
            output=f"would run: {shlex.join(command.argv)}",
            result={"argv": list(command.argv), "cwd": str(command.cwd)},
            reversible=undo is not None,
        )

    async def cancel(self, task_id: str) -> None:
        """Stop the task's running command (its whole process group), if any."""
        running = self._running.get(task_id)
        if running is not None:
            running.cancelled = True  # if still starting, `_run` stops it once started
            if running.pid is not None:
                await self._kill_group(running.pid)

    async def reap(self, handle: JSON) -> None:
        """Stop the process group a previous orchestrator recorded, if it is still that one.

        The group leader is matched by pid and start time (`started_between`, in clock
        ticks since boot, or the exact `start_time` of older handles), so a reused pid is
        left alone. If the leader is gone, members left in its group are stopped when all
        of them started after it. A handle without a start time, or a group already gone,
        is a no-op. Needs /proc (Linux).
        """
        pid, window = handle.get("pid"), _start_window(handle)
        pgid = handle.get("pgid", pid)
        if not (_is_int(pid) and _is_int(pgid)) or window is None:
            return
        earliest, latest = window
        leader = _proc_stat(pid)
        if leader is not None and leader[0] != "Z":
            if leader[1] == pgid and earliest <= leader[2] <= latest:
                await self._kill_group(pgid)
            return
        members = _group_members(pgid)
        if members and all(started >= earliest for started in members):
            await self._kill_group(pgid)

    async def finished(self, call: ActionCall) -> ActionResult | None:
        """With `record_exit`: the result of an interrupted attempt whose command exited 0
        (its output is lost with the worker); None if it failed, was stopped, or left no
        exit status."""
        if not self.record_exit:
            return None
        try:
            status = self._exit_file(call).read_text().strip()
        except OSError:
            return None
        # The file stays (collected after a week): two recoveries racing, or one whose
        # record failed, must both read the same answer; the store records only one.
        if status != "0":
            return None
        try:
            undo = self._parse_call(call)[1]
        except PermanentProviderError:
            undo = None
        return ActionResult(
            output=_RECOVERED_OUTPUT,
            result={"exit_code": 0, "pid": None},
            reversible=undo is not None,
        )

    # -- internals ------------------------------------------------------------------

    def _exit_file(self, call: ActionCall) -> Path:
        return self.state_dir / f"{call.task_id}.{call.attempt}.exit"

    def _collect_exit_files(self) -> None:
        """Remove exit statuses older than `_EXIT_FILE_DAYS` (hourly at most)."""
        now = time.time()
        if now - self._collected_at < 3600:
            return
        self._collected_at = now
        cutoff = now - _EXIT_FILE_DAYS * 86400
        for path in self.state_dir.glob("*.exit"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def _parse_call(self, call: ActionCall) -> tuple[_Command, _Command | None]:
        if call.action != "run":
            raise PermanentProviderError(
                f"local provider: unsupported action {call.action!r} (supported: run)"
            )
        undo = call.params.get("undo")
        command = self._parse_command(call.params, call.workspace, "params")
        if undo is None:
            return command, None
        if not isinstance(undo, Mapping):
            raise PermanentProviderError("undo must be a table {command, args, env, cwd}")
        return command, self._parse_command(undo, call.workspace, "undo")

    def _parse_command(self, spec: Mapping[str, Any], workspace: Path, where: str) -> _Command:
        if "shell" in spec:
            raise PermanentProviderError("shell is not supported: give `command` and `args`")
        if where == "undo" and (unknown := sorted(set(spec) - _COMMAND_KEYS)):
            raise PermanentProviderError(f"undo: unknown keys {unknown}")
        command, args, env = spec.get("command"), spec.get("args", []), spec.get("env", {})
        if not isinstance(command, str) or not command:
            raise PermanentProviderError(f"{where}: `command` must be a non-empty string")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise PermanentProviderError(f"{where}: `args` must be a list of strings")
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise PermanentProviderError(f"{where}: `env` must map strings to strings")
        cwd = spec.get("cwd")
        return _Command(
            argv=(command, *args),
            # None: the child inherits this process's environment as it is (no copy).
            env=None if self.inherit_env and not env else {**self._base_env(), **env},
            cwd=self._confine(workspace, cwd),
            explicit_cwd=cwd is not None,
        )

    def _confine(self, workspace: Path, cwd: object) -> Path:
        root = self._roots.get(workspace)
        if root is None:
            root = self._roots[workspace] = workspace.resolve()
        if cwd is None:
            return root
        if not isinstance(cwd, str) or Path(cwd).is_absolute():
            raise PermanentProviderError("cwd must be a path relative to the workspace")
        target = (root / cwd).resolve()
        if not target.is_relative_to(root):
            raise PermanentProviderError(f"cwd {cwd!r} escapes the workspace")
        return target

    def _base_env(self) -> dict[str, str]:
        if self.inherit_env:
            return dict(os.environ)
        env = {k: os.environ[k] for k in _MINIMAL_ENV if k in os.environ}
        env.setdefault("PATH", os.defpath)
        return env

    async def _run(self, call: ActionCall, command: _Command) -> tuple[str, int]:
        task_id, on_handle = call.task_id, call.on_handle
        # The workspace itself is created if missing, when the command is started.
        if command.explicit_cwd and not command.cwd.is_dir():
            raise PermanentProviderError(f"cwd {str(command.cwd)!r} is not a directory")
        exit_file = None
        if self.record_exit:
            if _resolve_executable(command) is None:  # the wrapper would only say 127
                raise PermanentProviderError(f"command not found: {command.argv[0]!r}")
            exit_file = self._exit_file(call)
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._collect_exit_files()
            exit_file.unlink(missing_ok=True)
            command = dataclasses.replace(
                command,
                argv=(
                    "/bin/sh",
                    "-c",
                    _EXIT_WRAPPER,
                    "provisioning",
                    str(exit_file),
                    *command.argv,
                ),
            )
        running = self._running[task_id] = _Running()
        try:
            child = self._spawn(command)
            pid = running.pid = child.pid
            try:
                if on_handle is not None and child.started_between is not None:
                    await on_handle(
                        {"pid": pid, "pgid": pid, "started_between": child.started_between}
                    )
                if running.cancelled:
                    await self._kill_group(pid)
                await child.wait()
            except BaseException:
                await self._stop(child)
                raise
            finally:
                child.close()
        finally:
            if self._running.get(task_id) is running:
                del self._running[task_id]
            # The exit file stays: until the executor has recorded this end, a worker
            # taking over an expired lease may need it (`finished` consumes it then).
        status = child.returncode
        output = child.text()
        if status == 0:
            return output, pid
        last = "\n".join(output.rstrip().splitlines()[-_ERROR_TAIL_LINES:])
        if running.cancelled:
            raise ProviderError(f"command cancelled: {last}")
        if status is not None and status < 0:
            raise ProviderError(f"command killed by signal {_signal_name(-status)}: {last}")
        raise ProviderError(f"command exited with status {status}: {last}")

    def _spawn(self, command: _Command) -> _Child:
        """Start the command (synchronously: nothing can cancel it half-started)."""
        name = command.argv[0]
        key = None if os.sep in name else (name, _search_path(command))
        executable = self._lookups.get(key) if key is not None else None
        if key is not None and executable is None:
            found = _resolve_executable(command)
            # Not found here, or found through a relative PATH entry: `Popen` searches
            # again from the command's own directory.
            if found is not None and os.path.isabs(found):
                executable = self._lookups[key] = found
        try:
            return _Child(command, executable, self.max_output_bytes)
        except FileNotFoundError:
            if not command.cwd.is_dir():
                if command.explicit_cwd:
                    raise PermanentProviderError(
                        f"cwd {str(command.cwd)!r} is not a directory"
                    ) from None
                command.cwd.mkdir(parents=True, exist_ok=True)  # the workspace, removed
                return self._spawn(command)
            if key is not None and self._lookups.pop(key, None) is not None:
                return self._spawn(command)  # the file found earlier is gone: look again
            raise PermanentProviderError(f"command not found: {name!r}") from None
        except PermissionError:
            raise PermanentProviderError(f"cannot execute {name!r}: permission denied") from None

    async def _stop(self, child: _Child) -> None:
        await self._kill_group(child.pid)
        await asyncio.wait([child.exited], timeout=1.0)

    async def _kill_group(self, pgid: int) -> None:
        """SIGTERM the group, wait up to `kill_grace` for it to go, then SIGKILL it."""
        _signal_group(pgid, signal.SIGTERM)
        try:
            for _ in range(int(self.kill_grace / _POLL_SECONDS)):
                if not _group_alive(pgid):
                    return
                await asyncio.sleep(_POLL_SECONDS)
        finally:
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)


def _resolve_executable(command: _Command) -> str | None:
    name = command.argv[0]
    if os.sep in name:
        path = command.cwd / name
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(name, path=_search_path(command))


def _search_path(command: _Command) -> str:
    """The PATH the command's name is looked up in: its own environment's."""
    environment = os.environ if command.env is None else command.env
    return environment.get("PATH", os.defpath)


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) from /proc, or None if gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2]), int(fields[19])


def _boot_ticks() -> int | None:
    """Now, as /proc counts a process's start time: clock ticks since boot (Linux only)."""
    if _BOOTTIME is None:
        return None
    return time.clock_gettime_ns(_BOOTTIME) // (1_000_000_000 // _TICKS_PER_SECOND)


def _start_window(handle: JSON) -> tuple[int, int] | None:
    window, exact = handle.get("started_between"), handle.get("start_time")
    if isinstance(window, list) and len(window) == 2 and all(_is_int(t) for t in window):
        return window[0], window[1]
    return (exact, exact) if _is_int(exact) else None


def _group_members(pgid: int) -> list[int]:
    """Start times of the live (not zombie) processes in a process group."""
    if not os.path.isdir("/proc"):
        return []
    starts = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                starts.append(stat[2])
    return starts


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    return bool(_group_members(pgid))  # zombies count as gone


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
