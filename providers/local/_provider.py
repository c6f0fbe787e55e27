"""The `local` provider: its settings, its params, and the life of one command."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    BaseProvider,
    InvalidParams,
    Kind,
    PermanentProviderError,
    ProviderConfigError,
    ProviderError,
)
from providers.local._child import Child, Command, Spool
from providers.local._groups import (
    group_alive,
    group_members,
    is_int,
    proc_stat,
    signal_group,
    signal_name,
    start_window,
)
from providers.local._isolation import DEFAULT_RUN_AS, Isolation
from providers.local._kinds import KINDS
from providers.local._state import StateDir

_CONFIG_KEYS = frozenset(
    {
        "env_allow",
        "inherit_env",
        "isolation",
        "kill_grace",
        "max_output_bytes",
        "record_exit",
        "run_as",
        "state_dir",
    }
)
#: What a command's environment takes from the orchestrator's, unless `inherit_env`.
DEFAULT_ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "TZ")
#: The `record_exit` wrapper, given the exit file then the command's argument list (no
#: user text is parsed): it waits for the provider's go (one line on its stdin; at end of
#: file, its orchestrator died before the command's handle was recorded: it runs
#: nothing), runs the command, then writes the command's exit status.
_WRAPPER = (
    'f=$1; shift; read -r go && [ "$go" = go ] || exit 125; '
    '"$@" </dev/null; c=$?; echo "$c" > "$f"; exit "$c"'
)
_RECOVERED_OUTPUT = (
    "[recovered: the command exited 0 after the worker running it stopped; its output was not kept]"
)
_COMMAND_KEYS = frozenset({"command", "args", "env", "cwd"})
_POLL_SECONDS = 0.05
_ERROR_TAIL_LINES = 10


@dataclass(slots=True)
class _Running:
    pid: int | None = None  # None while starting
    cancelled: bool = False


class LocalProvider(BaseProvider):
    """Runs `run` actions as local processes (declared in `_kinds`).

    Config (docs/providers.md says more):

    - `isolation` (`auto`, `user`, `bwrap`, `none`; default `auto`) and `run_as`
      (default `provisioning-run`): what keeps a command from the orchestrator's secrets;
    - `env_allow` (default PATH, LANG, LC_ALL, TZ): the variables of the orchestrator's
      environment a command gets, besides HOME (that of the user it runs as);
      `inherit_env = true` gives it the whole environment instead, secrets included;
    - `record_exit` (default true): run each command under the wrapper that holds it
      until its handle is recorded and records its exit status;
    - `max_output_bytes` (default 64 KiB, the tail is kept), `kill_grace` (default 2 s
      between SIGTERM and SIGKILL), `state_dir` (default
      `<temp dir>/provisioning-local-<uid>`, on this host).

    Params of `run`: `command` (required), `args` (list of strings), `env` (merged over
    the environment above), `cwd` (relative to the workspace, which it may not leave,
    symlinks included), `undo` (a command of the same shape, run by `compensate`).
    Other params (the name of what the command acts on, …) are ignored; `shell` is refused.
    """

    type_name: ClassVar[str] = "local"
    touches_host: ClassVar[bool] = True
    kinds: ClassVar[tuple[Kind, ...]] = KINDS

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            raise ProviderConfigError(f"unknown settings {unknown}")
        inherit = config.get("inherit_env", False)
        allow = config.get("env_allow", list(DEFAULT_ENV_ALLOW))
        limit = config.get("max_output_bytes", 64 * 1024)
        grace = config.get("kill_grace", 2.0)
        record_exit = config.get("record_exit", True)
        isolation = config.get("isolation", "auto")
        run_as = config.get("run_as", DEFAULT_RUN_AS)
        state_dir = config.get(
            "state_dir", str(Path(tempfile.gettempdir()) / f"provisioning-local-{os.getuid()}")
        )
        for key, value in (("inherit_env", inherit), ("record_exit", record_exit)):
            if not isinstance(value, bool):
                raise ProviderConfigError(f"{key} must be a boolean")
        if not isinstance(allow, list) or not all(isinstance(v, str) and v for v in allow):
            raise ProviderConfigError("env_allow must be a list of variable names")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ProviderConfigError("max_output_bytes must be a positive integer")
        if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
            raise ProviderConfigError("kill_grace must be >= 0")
        for key, value in (("isolation", isolation), ("run_as", run_as)):
            if not isinstance(value, str) or not value:
                raise ProviderConfigError(f"{key} must be a non-empty string")
        if not isinstance(state_dir, str) or not state_dir:
            raise ProviderConfigError("state_dir must be a path")
        self.name = name
        self.isolation = Isolation.configure(isolation, run_as)
        self.inherit_env = inherit
        self.env_allow = tuple(allow)
        self.record_exit = record_exit
        self.max_output_bytes = limit
        self.kill_grace = float(grace)
        self.state = StateDir(Path(state_dir))
        self._running: dict[str, _Running] = {}
        self._roots: dict[Path, Path] = {}  # workspace -> its resolved path
        # (name, PATH) -> where the name was found: looked up once, as a shell's hash
        # table does, and again only once that file is gone.
        self._lookups: dict[tuple[str, str], str] = {}
        # (name, PATH, directory) -> the file found last time a wrapped command was run.
        self._found: dict[tuple[str, str, Path], str] = {}

    @property
    def state_dir(self) -> Path:
        return self.state.path

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
        pid, window = handle.get("pid"), start_window(handle)
        pgid = handle.get("pgid", pid)
        if not (is_int(pid) and is_int(pgid)) or window is None:
            return
        earliest, latest = window
        leader = proc_stat(pid)
        if leader is not None and leader[0] != "Z":
            if leader[1] == pgid and earliest <= leader[2] <= latest:
                await self._kill_group(pgid)
            return
        members = group_members(pgid)
        if members and all(started >= earliest for started in members):
            await self._kill_group(pgid)

    async def finished(self, call: ActionCall) -> ActionResult | None:
        """With `record_exit`: the result of an interrupted attempt whose command exited 0,
        with the output it printed; None if it failed, was stopped, or left no exit
        status."""
        if not self.record_exit:
            return None
        # The files stay (collected after a week): two recoveries racing, or one whose
        # record failed, must both read the same answer; the store records only one.
        if self.state.exit_status(call) != "0":
            return None
        try:
            undo = self._parse_call(call)[1]
        except PermanentProviderError:
            undo = None
        output = self.state.output(call, self.max_output_bytes)
        return ActionResult(
            output=_RECOVERED_OUTPUT if output is None else output,
            result={"exit_code": 0, "pid": None},
            reversible=undo is not None,
        )

    def validate(self, kind: str, operation: str, params: Mapping[str, Any]) -> msgspec.Struct:
        """The declared struct, without a shell and with a relative `cwd`."""
        struct = super().validate(kind, operation, params)
        if "shell" in params:
            raise InvalidParams("shell", "not supported: give `command` and `args`")
        for where, spec in (("", params), ("undo.", params.get("undo") or {})):
            cwd = spec.get("cwd")
            if cwd is not None and Path(cwd).is_absolute():
                raise InvalidParams(f"{where}cwd", "must be a path relative to the workspace")
        return struct

    # -- internals ------------------------------------------------------------------

    def _parse_call(self, call: ActionCall) -> tuple[Command, Command | None]:
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

    def _parse_command(self, spec: Mapping[str, Any], workspace: Path, where: str) -> Command:
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
        return Command(
            argv=(command, *args),
            env={**self._base_env(), **env},
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
            env = dict(os.environ)
        else:
            env = {k: os.environ[k] for k in self.env_allow if k in os.environ}
        env.setdefault("PATH", os.defpath)
        env["HOME"] = self.isolation.home
        return env

    async def _run(self, call: ActionCall, command: Command) -> tuple[str, int]:
        # The workspace itself is created if missing, when the command is started.
        if command.explicit_cwd and not command.cwd.is_dir():
            raise PermanentProviderError(f"cwd {str(command.cwd)!r} is not a directory")
        self.state.prepare()
        prefix = self.isolation.argv((*call.protected_paths, self.state.path))
        if (self.record_exit or prefix) and not self._exists(command):
            # (What runs it would only say 127.)
            raise PermanentProviderError(f"command not found: {command.argv[0]!r}")
        launch = dataclasses.replace(command, argv=(*prefix, *command.argv))
        spool_file = None
        if self.record_exit:
            exit_file, spool_file = self.state.exit_file(call), self.state.spool_file(call)
            exit_file.unlink(missing_ok=True)
            self.state.collect()
            wrapper = ("/bin/sh", "-c", _WRAPPER, "provisioning", str(exit_file))
            launch = dataclasses.replace(launch, argv=(*wrapper, *launch.argv))
        status: int | None = None
        spool = Spool(spool_file, self.state.path, self.max_output_bytes)
        try:
            running = self._running[call.task_id] = _Running()
            try:
                child = await self._watch(call, command, launch, spool, running)
            finally:
                if self._running.get(call.task_id) is running:
                    del self._running[call.task_id]
            status = child.returncode
            output = spool.text()
            if status == 0:
                spool.trim(final=True)
        finally:
            spool.close()
            if self.record_exit and status != 0:
                self.state.forget(call)
        if status == 0:
            return output, child.pid
        last = "\n".join(output.rstrip().splitlines()[-_ERROR_TAIL_LINES:])
        if running.cancelled:
            raise ProviderError(f"command cancelled: {last}")
        if status is not None and status < 0:
            raise ProviderError(f"command killed by signal {signal_name(-status)}: {last}")
        raise ProviderError(f"command exited with status {status}: {last}")

    async def _watch(
        self, call: ActionCall, command: Command, launch: Command, spool: Spool, running: _Running
    ) -> Child:
        """Start the command, let it go once its handle is recorded, wait for its end."""
        child = self._spawn(command, launch, spool)
        pid = running.pid = child.pid
        try:
            if call.on_handle is not None and child.started_between is not None:
                await call.on_handle(
                    {"pid": pid, "pgid": pid, "started_between": child.started_between}
                )
            if running.cancelled:
                await self._kill_group(pid)
            else:
                child.release()
            await child.wait()
        except BaseException:
            await self._stop(child)
            raise
        finally:
            child.close()  # a command still held back never starts
        return child

    def _exists(self, command: Command) -> bool:
        """Whether the command's name leads to an executable file (where it was found
        last time is checked first)."""
        key = (command.argv[0], _search_path(command), command.cwd)
        found = self._found.get(key)
        if found is not None and os.access(found, os.X_OK):
            return True
        found = _resolve_executable(command)
        if found is None:
            self._found.pop(key, None)
            return False
        self._found[key] = found
        return True

    def _spawn(self, command: Command, launch: Command, spool: Spool) -> Child:
        """Start `launch` (synchronously: nothing can cancel it half-started): `command`
        itself, or what runs it (its wrapper, its isolation)."""
        direct = launch.argv == command.argv
        name = command.argv[0]
        key = None if not direct or os.sep in name else (name, _search_path(command))
        executable = self._lookups.get(key) if key is not None else None
        if key is not None and executable is None:
            found = _resolve_executable(command, from_cwd=False)
            # Not found here, or found through a relative PATH entry: `Popen` searches
            # again from the command's own directory.
            if found is not None and os.path.isabs(found):
                executable = self._lookups[key] = found
        try:
            return Child(launch, executable, spool, gated=self.record_exit)
        except FileNotFoundError:
            if not command.cwd.is_dir():
                if command.explicit_cwd:
                    raise PermanentProviderError(
                        f"cwd {str(command.cwd)!r} is not a directory"
                    ) from None
                command.cwd.mkdir(parents=True, exist_ok=True)  # the workspace, removed
                return self._spawn(command, launch, spool)
            if key is not None and self._lookups.pop(key, None) is not None:
                return self._spawn(command, launch, spool)  # the file found is gone: again
            raise PermanentProviderError(f"command not found: {name!r}") from None
        except PermissionError:
            raise PermanentProviderError(f"cannot execute {name!r}: permission denied") from None

    async def _stop(self, child: Child) -> None:
        await self._kill_group(child.pid)
        await asyncio.wait([child.exited], timeout=1.0)

    async def _kill_group(self, pgid: int) -> None:
        """SIGTERM the group, wait up to `kill_grace` for it to go, then SIGKILL it."""
        signal_group(pgid, signal.SIGTERM)
        try:
            for _ in range(int(self.kill_grace / _POLL_SECONDS)):
                if not group_alive(pgid):
                    return
                await asyncio.sleep(_POLL_SECONDS)
        finally:
            if group_alive(pgid):
                signal_group(pgid, signal.SIGKILL)


def _resolve_executable(command: Command, *, from_cwd: bool = True) -> str | None:
    """Where the command's name leads, searching its PATH as the command would be
    (relative entries from its directory; from this process's with `from_cwd` false)."""
    name = command.argv[0]
    if os.sep in name:
        path = command.cwd / name
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    entries = _search_path(command).split(os.pathsep)
    if from_cwd:
        entries = [e if os.path.isabs(e) else str(command.cwd / e) for e in entries]
    return shutil.which(name, path=os.pathsep.join(entries))


def _search_path(command: Command) -> str:
    """The PATH the command's name is looked up in: its own environment's."""
    return command.env.get("PATH", os.defpath)
