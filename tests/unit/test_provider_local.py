"""The local provider runs real processes: these tests spawn real ones."""

from __future__ import annotations

import asyncio
import errno
import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    PermanentProviderError,
    Provider,
    ProviderConfigError,
    ProviderError,
)
from providers.local import LocalProvider
from tests.local_commands import (
    RUN_AS,
    is_gone,
    make_call,
    open_directory,
    require_default_isolation,
    sh,
    start_time,
    wait_for_file,
    wait_gone,
)

HOME = os.environ.get("HOME", "")

pytestmark = [
    # Touches no database: runs in the SQLite pass only (tests/conftest.py).
    pytest.mark.backend_independent,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc"),
]


@pytest.fixture(autouse=True)
def _default_isolation() -> None:
    require_default_isolation()


@pytest.fixture
def workspace() -> Iterator[Path]:
    """Where commands run: a directory the user they run as may write in."""
    with open_directory("provisioning-local-") as path:
        yield path


def local(workspace: Path, **config: Any) -> LocalProvider:
    """A provider whose files stay in the test's workspace."""
    return LocalProvider("local", {"state_dir": str(workspace / ".state"), **config})


@pytest.fixture
def provider(workspace: Path) -> LocalProvider:
    return local(workspace, kill_grace=0.5)


# A command whose grandchild records its pid, then the command waits for it.
SPAWNS_GRANDCHILD = "sleep 30 & echo $! > grandchild.pid; wait"


def test_it_is_a_provider(provider: LocalProvider) -> None:
    assert isinstance(provider, Provider)
    assert LocalProvider.type_name == "local"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"inherit_env": "yes"}, "inherit_env"),
        ({"record_exit": 1}, "record_exit"),
        ({"env_allow": "PATH"}, "env_allow"),
        ({"env_allow": [""]}, "env_allow"),
        ({"max_output_bytes": 0}, "max_output_bytes"),
        ({"kill_grace": -1}, "kill_grace"),
        ({"isolation": "chroot"}, "isolation must be one of auto, user, bwrap, none"),
        ({"run_as": ""}, "run_as"),
        ({"shell": True}, "unknown settings"),
    ],
)
def test_invalid_config_is_refused(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ProviderConfigError, match=message):
        LocalProvider("local", config)


async def test_a_successful_command_returns_its_output(
    provider: LocalProvider, workspace: Path
) -> None:
    result = await provider.apply(make_call(workspace, **sh("echo out; echo err >&2")))
    assert result.output == "out\nerr\n"
    assert result.result["exit_code"] == 0
    assert isinstance(result.result["pid"], int)
    assert result.reversible is False


async def test_runs_in_the_workspace_and_creates_it(
    provider: LocalProvider, workspace: Path
) -> None:
    workspace = workspace / "ws"
    result = await provider.apply(make_call(workspace, command="pwd"))
    assert result.output.strip() == str(workspace.resolve())


async def test_a_workspace_removed_since_an_earlier_run_is_created_again(
    provider: LocalProvider, workspace: Path
) -> None:
    workspace = workspace / "ws"
    await provider.apply(make_call(workspace, command="true"))
    workspace.rmdir()
    result = await provider.apply(make_call(workspace, command="pwd"))
    assert result.output.strip() == str(workspace.resolve())


async def test_the_command_is_reaped_when_apply_returns(
    provider: LocalProvider, workspace: Path
) -> None:
    result = await provider.apply(make_call(workspace, command="true"))
    with pytest.raises(ChildProcessError):  # no zombie left to collect
        os.waitpid(result.result["pid"], os.WNOHANG)


async def test_a_command_found_in_path_is_looked_up_again_once_it_is_gone(
    provider: LocalProvider, workspace: Path
) -> None:
    first, second = workspace / "first", workspace / "second"
    for directory in (first, second):
        directory.mkdir()
        tool = directory / "tool"
        tool.write_text(f"#!/bin/sh\necho {directory.name}\n")
        tool.chmod(0o755)
    env = {"PATH": f"{first}:{second}:{os.defpath}"}
    run = make_call(workspace, command="tool", env=env)
    assert (await provider.apply(run)).output == "first\n"
    (first / "tool").unlink()  # as a shell's hash table, the lookup is redone once gone
    assert (await provider.apply(run)).output == "second\n"
    (second / "tool").unlink()
    with pytest.raises(PermanentProviderError, match="command not found: 'tool'"):
        await provider.apply(run)


async def test_a_relative_path_entry_is_searched_from_the_commands_directory(
    provider: LocalProvider, workspace: Path
) -> None:
    tool = workspace / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho relative\n")
    tool.chmod(0o755)
    call = make_call(workspace, command="tool", env={"PATH": f"bin:{os.defpath}"})
    assert (await provider.apply(call)).output == "relative\n"


async def test_without_pidfds_a_thread_waits_for_the_exit(
    provider: LocalProvider, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("providers.local._child._PIDFD", False)
    result = await provider.apply(make_call(workspace, **sh("echo done")))
    assert result.output == "done\n"
    with pytest.raises(ProviderError, match="exited with status 4"):
        await provider.apply(make_call(workspace, **sh("exit 4")))
    sleep = make_call(workspace, "t5", command="sleep", args=["30"])
    slow = asyncio.create_task(provider.apply(sleep))
    await asyncio.sleep(0.2)
    await provider.cancel("t5")
    with pytest.raises(ProviderError, match="cancelled"):
        await asyncio.wait_for(slow, 5)


async def test_non_zero_exit_is_a_retryable_error_with_the_last_output(
    provider: LocalProvider, workspace: Path
) -> None:
    with pytest.raises(ProviderError, match=r"exited with status 3: .*boom") as caught:
        await provider.apply(make_call(workspace, **sh("echo boom; exit 3")))
    assert not isinstance(caught.value, PermanentProviderError)


async def test_command_not_found_is_permanent(provider: LocalProvider, workspace: Path) -> None:
    with pytest.raises(PermanentProviderError, match="command not found"):
        await provider.apply(make_call(workspace, command="no-such-command-xyz"))


async def test_only_run_is_supported(provider: LocalProvider, workspace: Path) -> None:
    with pytest.raises(PermanentProviderError, match="supported: run"):
        await provider.apply(make_call(workspace, action="exec", command="true"))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"command": "echo", "shell": True}, "shell is not supported"),
        ({"command": ""}, "command"),
        ({"command": "echo", "args": "a b"}, "args"),
        ({"command": "echo", "env": {"N": 1}}, "env"),
        ({"command": "echo", "undo": {"command": "rm", "argz": []}}, "unknown keys"),
        ({"command": "echo", "undo": "rm -rf x"}, "undo"),
    ],
)
async def test_malformed_params_are_permanent_errors(
    provider: LocalProvider, workspace: Path, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentProviderError, match=message):
        await provider.apply(make_call(workspace, **params))


async def test_params_describing_the_target_are_ignored(
    provider: LocalProvider, workspace: Path
) -> None:
    call = make_call(workspace, command="echo", args=["hi"], name="web-01", plan="small")
    assert (await provider.apply(call)).output == "hi\n"


async def test_a_command_gets_only_the_allowed_variables_and_its_own(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_ONLY", "inherited")
    monkeypatch.setenv("TZ", "UTC")
    call = make_call(workspace, command="env", env={"GREETING": "hello", "LC_ALL": "C"})

    async def environment(config: dict[str, Any]) -> dict[str, str]:
        output = (await local(workspace, **config).apply(call)).output
        return dict(line.split("=", 1) for line in output.splitlines())

    allowed = await environment({})
    assert allowed["GREETING"] == "hello" and allowed["LC_ALL"] == "C"  # params win
    assert allowed["TZ"] == "UTC"
    # (and PWD, from the wrapper's shell)
    assert set(allowed) - {"PWD"} <= {"PATH", "LANG", "LC_ALL", "TZ", "HOME", "GREETING"}
    # HOME is that of the user the command runs as.
    assert allowed["HOME"] == (pwd.getpwnam(RUN_AS).pw_dir if os.geteuid() == 0 else HOME)

    narrower = await environment({"env_allow": ["TZ"]})
    assert set(narrower) - {"PWD"} == {"TZ", "PATH", "HOME", "GREETING", "LC_ALL"}
    assert narrower["PATH"] == os.defpath  # a command needs one

    inherited = await environment({"inherit_env": True})
    assert inherited["ORCHESTRATOR_ONLY"] == "inherited" and inherited["GREETING"] == "hello"


async def test_output_keeps_the_tail_and_marks_truncation(workspace: Path) -> None:
    provider = local(workspace, max_output_bytes=1000)
    script = "head -c 100000 /dev/zero | tr '\\0' a; echo; echo THE-END"
    result = await provider.apply(make_call(workspace, **sh(script)))
    assert result.output.startswith("[output truncated: 99009 earlier bytes dropped]\n")
    assert result.output.endswith("THE-END\n")
    assert len(result.output.split("\n", 1)[1]) == 1000


async def test_cwd_is_resolved_under_the_workspace(
    provider: LocalProvider, workspace: Path
) -> None:
    (workspace / "sub" / "dir").mkdir(parents=True)
    result = await provider.apply(make_call(workspace, command="pwd", cwd="sub/dir"))
    assert result.output.strip() == str((workspace / "sub" / "dir").resolve())


@pytest.mark.parametrize("cwd", ["../..", "..", "sub/../../x", "/etc", "escape", "escape/inner"])
async def test_cwd_escaping_the_workspace_is_refused(
    provider: LocalProvider, workspace: Path, cwd: str
) -> None:
    confined = workspace / "ws"
    (confined / "sub").mkdir(parents=True)
    (workspace / "outside" / "inner").mkdir(parents=True)
    (confined / "escape").symlink_to(workspace / "outside")
    for method in (provider.apply, provider.check):
        with pytest.raises(PermanentProviderError, match="cwd"):
            await method(make_call(confined, command="pwd", cwd=cwd))


async def test_on_handle_receives_the_process_group_before_the_command_ends(
    provider: LocalProvider, workspace: Path
) -> None:
    handles: list[JSON] = []

    async def on_handle(handle: JSON) -> None:
        handles.append(handle)
        assert not is_gone(handle["pid"])
        earliest, latest = handle["started_between"]
        assert earliest <= start_time(handle["pid"]) <= latest

    call = make_call(workspace, **sh("sleep 0.2; echo done"))
    result = await provider.apply(ActionCall(**{**_fields(call), "on_handle": on_handle}))
    assert len(handles) == 1
    assert handles[0]["pid"] == handles[0]["pgid"] == result.result["pid"]


async def test_cancelling_kills_the_whole_process_group(
    provider: LocalProvider, workspace: Path
) -> None:
    task = asyncio.create_task(provider.apply(make_call(workspace, **sh(SPAWNS_GRANDCHILD))))
    grandchild = int(await wait_for_file(workspace / "grandchild.pid"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(grandchild, timeout=1.0)


async def test_a_timeout_kills_the_whole_process_group(
    provider: LocalProvider, workspace: Path
) -> None:
    apply = provider.apply(make_call(workspace, **sh(f"echo $$ > leader.pid; {SPAWNS_GRANDCHILD}")))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(apply, timeout=0.5)
    assert is_gone(int((workspace / "leader.pid").read_text()))
    assert await wait_gone(int((workspace / "grandchild.pid").read_text()), timeout=1.0)


async def test_processes_ignoring_sigterm_are_killed_after_the_grace_period(
    workspace: Path,
) -> None:
    provider = local(workspace, kill_grace=0.2)
    script = f"trap '' TERM; {SPAWNS_GRANDCHILD}"
    task = asyncio.create_task(provider.apply(make_call(workspace, **sh(script))))
    grandchild = int(await wait_for_file(workspace / "grandchild.pid"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(grandchild, timeout=1.0)


async def test_cancel_by_task_id_kills_the_group_and_fails_the_apply(
    provider: LocalProvider, workspace: Path
) -> None:
    task = asyncio.create_task(provider.apply(make_call(workspace, "t9", **sh(SPAWNS_GRANDCHILD))))
    grandchild = int(await wait_for_file(workspace / "grandchild.pid"))
    await provider.cancel("t9")
    with pytest.raises(ProviderError, match="cancelled"):
        await task
    assert await wait_gone(grandchild, timeout=1.0)
    await provider.cancel("t9")  # nothing running any more: a no-op


@pytest.mark.parametrize("steps", range(6))
async def test_cancelling_while_the_command_starts_leaves_nothing_running(
    provider: LocalProvider, workspace: Path, steps: int
) -> None:
    task = asyncio.create_task(provider.apply(make_call(workspace, **sh(SPAWNS_GRANDCHILD))))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    pidfile = workspace / "grandchild.pid"
    if pidfile.exists() and pidfile.read_text().strip():
        assert await wait_gone(int(pidfile.read_text()), timeout=1.0)


async def test_cancel_by_task_id_while_the_command_starts_stops_it(
    provider: LocalProvider, workspace: Path
) -> None:
    task = asyncio.create_task(provider.apply(make_call(workspace, "t8", **sh(SPAWNS_GRANDCHILD))))
    await asyncio.sleep(0)  # the apply has begun to start the process
    await provider.cancel("t8")
    with pytest.raises(ProviderError, match="cancelled"):
        await asyncio.wait_for(task, timeout=5)


async def test_a_background_process_left_holding_the_output_does_not_block(
    provider: LocalProvider, workspace: Path
) -> None:
    script = "sleep 30 & echo $! > grandchild.pid; echo started"
    result = await asyncio.wait_for(provider.apply(make_call(workspace, **sh(script))), 5)
    assert result.output == "started\n"
    os.kill(int((workspace / "grandchild.pid").read_text()), signal.SIGKILL)


async def test_a_command_that_closes_its_output_early_is_waited_for_to_its_exit(
    provider: LocalProvider, workspace: Path
) -> None:
    script = "echo before; exec >&- 2>&-; sleep 0.3; touch finished; exit 3"
    with pytest.raises(ProviderError, match="exited with status 3: before"):
        await asyncio.wait_for(provider.apply(make_call(workspace, **sh(script))), 5)
    assert (workspace / "finished").exists()


async def test_without_a_pidfd_to_spare_a_thread_waits_for_the_exit(
    provider: LocalProvider, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_descriptor_left(pid: int, flags: int = 0) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "pidfd_open", no_descriptor_left)
    script = "echo before; exec >&- 2>&-; sleep 0.2; exit 3"  # outlives its output
    with pytest.raises(ProviderError, match="exited with status 3: before"):
        await asyncio.wait_for(provider.apply(make_call(workspace, **sh(script))), 5)


def spawn_group(workspace: Path) -> subprocess.Popen[bytes]:
    """A process group a previous orchestrator could have left behind."""
    return subprocess.Popen(["sh", "-c", SPAWNS_GRANDCHILD], cwd=workspace, start_new_session=True)


async def test_reap_kills_a_live_process_group_from_its_handle(
    provider: LocalProvider, workspace: Path
) -> None:
    leader = spawn_group(workspace)
    grandchild = int(await wait_for_file(workspace / "grandchild.pid"))
    handle = {"pid": leader.pid, "pgid": leader.pid, "start_time": start_time(leader.pid)}
    await provider.reap(handle)
    assert leader.wait(timeout=2) == -signal.SIGTERM
    assert await wait_gone(grandchild, timeout=1.0)
    await provider.reap(handle)  # already gone: a no-op


async def test_reap_stops_the_group_of_a_handle_recorded_by_an_earlier_provider(
    workspace: Path,
) -> None:
    handles: list[JSON] = []

    async def on_handle(handle: JSON) -> None:
        handles.append(handle)

    earlier = local(workspace)
    call = make_call(workspace, "t9", **sh(SPAWNS_GRANDCHILD))
    apply = asyncio.create_task(
        earlier.apply(ActionCall(**{**_fields(call), "on_handle": on_handle}))
    )
    grandchild = int(await wait_for_file(workspace / "grandchild.pid"))
    await local(workspace).reap(handles[0])  # as a restarted orchestrator would
    assert await wait_gone(grandchild, timeout=1.0)
    with pytest.raises(ProviderError, match="signal SIGTERM"):
        await asyncio.wait_for(apply, 5)


@pytest.mark.parametrize("key", ["start_time", "started_between"])
async def test_reap_refuses_when_the_start_time_does_not_match(
    provider: LocalProvider, workspace: Path, key: str
) -> None:
    leader = spawn_group(workspace)
    grandchild = int(await wait_for_file(workspace / "grandchild.pid"))
    try:
        before = start_time(leader.pid) - 1
        when = before if key == "start_time" else [before - 5, before]
        stale = {"pid": leader.pid, "pgid": leader.pid, key: when}
        await provider.reap(stale)
        await asyncio.sleep(0.2)
        assert leader.poll() is None
        assert not is_gone(grandchild)
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


async def test_reap_kills_members_left_behind_by_a_dead_leader(
    provider: LocalProvider, workspace: Path
) -> None:
    leader = spawn_group(workspace)
    grandchild = int(await wait_for_file(workspace / "grandchild.pid"))
    handle = {"pid": leader.pid, "pgid": leader.pid, "start_time": start_time(leader.pid)}
    leader.kill()  # only the leader: the grandchild stays in the group
    leader.wait()
    assert not is_gone(grandchild)
    await provider.reap(handle)
    assert await wait_gone(grandchild, timeout=1.0)


async def test_compensate_runs_the_undo_command(provider: LocalProvider, workspace: Path) -> None:
    undo = {"command": "rm", "args": ["made"]}
    call = make_call(workspace, command="touch", args=["made"], undo=undo)
    applied = await provider.apply(call)
    assert applied.reversible
    assert (workspace / "made").exists()
    await provider.compensate(call, applied)
    assert not (workspace / "made").exists()


async def test_compensate_without_undo_is_irreversible(
    provider: LocalProvider, workspace: Path
) -> None:
    call = make_call(workspace, command="true")
    with pytest.raises(PermanentProviderError, match="irreversible"):
        await provider.compensate(call, ActionResult())


async def test_check_validates_and_runs_nothing(provider: LocalProvider, workspace: Path) -> None:
    result = await provider.check(make_call(workspace, command="touch", args=["a file"]))
    assert result.output == "would run: touch 'a file'"
    assert result.resources == ()
    assert list(workspace.iterdir()) == []
    with pytest.raises(PermanentProviderError, match="command not found"):
        await provider.check(make_call(workspace, command="no-such-command-xyz"))
    with pytest.raises(PermanentProviderError, match="command not found"):
        bad_undo = {"command": "no-such-undo-xyz"}
        await provider.check(make_call(workspace, command="true", undo=bad_undo))


def _fields(call: ActionCall) -> dict[str, Any]:
    return {name: getattr(call, name) for name in ActionCall.__dataclass_fields__}


def test_on_uvloop_as_serve_and_worker_run_it(workspace: Path) -> None:
    """The loop the product runs on: output, exit statuses and a cancelled group."""
    import uvloop

    async def scenario() -> None:
        provider = local(workspace, kill_grace=0.5)
        done = await provider.apply(make_call(workspace, **sh("echo out; echo err >&2")))
        assert done.output == "out\nerr\n"
        with pytest.raises(ProviderError, match="exited with status 3"):
            await provider.apply(make_call(workspace, **sh("exit 3")))
        running = asyncio.create_task(
            provider.apply(make_call(workspace, "t2", **sh(SPAWNS_GRANDCHILD)))
        )
        grandchild = int(await wait_for_file(workspace / "grandchild.pid"))
        await provider.cancel("t2")
        with pytest.raises(ProviderError, match="cancelled"):
            await asyncio.wait_for(running, 5)
        assert await wait_gone(grandchild, timeout=2.0)

    uvloop.run(scenario())
