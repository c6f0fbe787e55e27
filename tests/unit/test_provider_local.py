"""The local provider runs real processes: these tests spawn real ones."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import time
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

pytestmark = [
    # Touches no database: runs in the SQLite pass only (tests/conftest.py).
    pytest.mark.backend_independent,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc"),
]


class NoInventory:
    async def get(self, kind: str, name: str) -> JSON | None:
        return None

    async def list(self, kind: str) -> list[JSON]:
        return []


def make_call(
    workspace: Path, task_id: str = "t1", action: str = "run", **params: Any
) -> ActionCall:
    return ActionCall(
        task_id=task_id,
        workflow_id="w1",
        instance="local",
        action=action,
        params=params,
        attempt=1,
        timeout=None,
        workspace=workspace,
        inventory=NoInventory(),
    )


def sh(script: str) -> dict[str, Any]:
    return {"command": "sh", "args": ["-c", script]}


def is_gone(pid: int) -> bool:
    """A pid that no longer runs: absent, or a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def start_time(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


async def wait_for_file(path: Path, timeout: float = 5.0) -> str:
    async with asyncio.timeout(timeout):
        while not path.exists() or not path.read_text().strip():
            await asyncio.sleep(0.01)
    return path.read_text().strip()


async def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            while not is_gone(pid):
                await asyncio.sleep(0.01)
    except TimeoutError:
        return False
    return True


@pytest.fixture
def provider() -> LocalProvider:
    return LocalProvider("local", {"kill_grace": 0.5})


# A command whose grandchild records its pid, then the command waits for it.
SPAWNS_GRANDCHILD = "sleep 30 & echo $! > grandchild.pid; wait"


def test_it_is_a_provider(provider: LocalProvider) -> None:
    assert isinstance(provider, Provider)
    assert LocalProvider.type_name == "local"


@pytest.mark.parametrize(
    "config",
    [{"inherit_env": "yes"}, {"max_output_bytes": 0}, {"kill_grace": -1}, {"shell": True}],
)
def test_invalid_config_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ProviderConfigError):
        LocalProvider("local", config)


async def test_a_successful_command_returns_its_output(
    provider: LocalProvider, tmp_path: Path
) -> None:
    result = await provider.apply(make_call(tmp_path, **sh("echo out; echo err >&2")))
    assert result.output == "out\nerr\n"
    assert result.result["exit_code"] == 0
    assert isinstance(result.result["pid"], int)
    assert result.reversible is False


async def test_runs_in_the_workspace_and_creates_it(
    provider: LocalProvider, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    result = await provider.apply(make_call(workspace, command="pwd"))
    assert result.output.strip() == str(workspace.resolve())


async def test_a_workspace_removed_since_an_earlier_run_is_created_again(
    provider: LocalProvider, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    await provider.apply(make_call(workspace, command="true"))
    workspace.rmdir()
    result = await provider.apply(make_call(workspace, command="pwd"))
    assert result.output.strip() == str(workspace.resolve())


async def test_the_command_is_reaped_when_apply_returns(
    provider: LocalProvider, tmp_path: Path
) -> None:
    result = await provider.apply(make_call(tmp_path, command="true"))
    with pytest.raises(ChildProcessError):  # no zombie left to collect
        os.waitpid(result.result["pid"], os.WNOHANG)


async def test_a_command_found_in_path_is_looked_up_again_once_it_is_gone(
    provider: LocalProvider, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
        tool = directory / "tool"
        tool.write_text(f"#!/bin/sh\necho {directory.name}\n")
        tool.chmod(0o755)
    env = {"PATH": f"{first}:{second}:{os.defpath}"}
    run = make_call(tmp_path, command="tool", env=env)
    assert (await provider.apply(run)).output == "first\n"
    (first / "tool").unlink()  # as a shell's hash table, the lookup is redone once gone
    assert (await provider.apply(run)).output == "second\n"
    (second / "tool").unlink()
    with pytest.raises(PermanentProviderError, match="command not found: 'tool'"):
        await provider.apply(run)


async def test_a_relative_path_entry_is_searched_from_the_commands_directory(
    provider: LocalProvider, tmp_path: Path
) -> None:
    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho relative\n")
    tool.chmod(0o755)
    call = make_call(tmp_path, command="tool", env={"PATH": f"bin:{os.defpath}"})
    assert (await provider.apply(call)).output == "relative\n"


async def test_without_pidfds_a_thread_waits_for_the_exit(
    provider: LocalProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("providers.local._child._PIDFD", False)
    result = await provider.apply(make_call(tmp_path, **sh("echo done")))
    assert result.output == "done\n"
    with pytest.raises(ProviderError, match="exited with status 4"):
        await provider.apply(make_call(tmp_path, **sh("exit 4")))
    sleep = make_call(tmp_path, "t5", command="sleep", args=["30"])
    slow = asyncio.create_task(provider.apply(sleep))
    await asyncio.sleep(0.2)
    await provider.cancel("t5")
    with pytest.raises(ProviderError, match="cancelled"):
        await asyncio.wait_for(slow, 5)


async def test_non_zero_exit_is_a_retryable_error_with_the_last_output(
    provider: LocalProvider, tmp_path: Path
) -> None:
    with pytest.raises(ProviderError, match=r"exited with status 3: .*boom") as caught:
        await provider.apply(make_call(tmp_path, **sh("echo boom; exit 3")))
    assert not isinstance(caught.value, PermanentProviderError)


async def test_command_not_found_is_permanent(provider: LocalProvider, tmp_path: Path) -> None:
    with pytest.raises(PermanentProviderError, match="command not found"):
        await provider.apply(make_call(tmp_path, command="no-such-command-xyz"))


async def test_only_run_is_supported(provider: LocalProvider, tmp_path: Path) -> None:
    with pytest.raises(PermanentProviderError, match="supported: run"):
        await provider.apply(make_call(tmp_path, action="exec", command="true"))


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
    provider: LocalProvider, tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentProviderError, match=message):
        await provider.apply(make_call(tmp_path, **params))


async def test_params_describing_the_target_are_ignored(
    provider: LocalProvider, tmp_path: Path
) -> None:
    call = make_call(tmp_path, command="echo", args=["hi"], name="web-01", plan="small")
    assert (await provider.apply(call)).output == "hi\n"


async def test_env_is_merged_over_the_inherited_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_ONLY", "inherited")
    call = make_call(tmp_path, command="env", env={"GREETING": "hello"})
    inherited = (await LocalProvider("l", {}).apply(call)).output.splitlines()
    assert "GREETING=hello" in inherited
    assert "ORCHESTRATOR_ONLY=inherited" in inherited

    minimal = (await LocalProvider("l", {"inherit_env": False}).apply(call)).output.splitlines()
    assert "GREETING=hello" in minimal
    assert not any(line.startswith("ORCHESTRATOR_ONLY=") for line in minimal)
    assert {line.split("=", 1)[0] for line in minimal} <= {"PATH", "HOME", "LANG", "GREETING"}


async def test_output_keeps_the_tail_and_marks_truncation(tmp_path: Path) -> None:
    provider = LocalProvider("l", {"max_output_bytes": 1000})
    script = "head -c 100000 /dev/zero | tr '\\0' a; echo; echo THE-END"
    result = await provider.apply(make_call(tmp_path, **sh(script)))
    assert result.output.startswith("[output truncated: 99009 earlier bytes dropped]\n")
    assert result.output.endswith("THE-END\n")
    assert len(result.output.split("\n", 1)[1]) == 1000


async def test_cwd_is_resolved_under_the_workspace(provider: LocalProvider, tmp_path: Path) -> None:
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    result = await provider.apply(make_call(tmp_path, command="pwd", cwd="sub/dir"))
    assert result.output.strip() == str((tmp_path / "sub" / "dir").resolve())


@pytest.mark.parametrize("cwd", ["../..", "..", "sub/../../x", "/etc", "escape", "escape/inner"])
async def test_cwd_escaping_the_workspace_is_refused(
    provider: LocalProvider, tmp_path: Path, cwd: str
) -> None:
    workspace = tmp_path / "ws"
    (workspace / "sub").mkdir(parents=True)
    (tmp_path / "outside" / "inner").mkdir(parents=True)
    (workspace / "escape").symlink_to(tmp_path / "outside")
    for method in (provider.apply, provider.check):
        with pytest.raises(PermanentProviderError, match="cwd"):
            await method(make_call(workspace, command="pwd", cwd=cwd))


async def test_on_handle_receives_the_process_group_before_the_command_ends(
    provider: LocalProvider, tmp_path: Path
) -> None:
    handles: list[JSON] = []

    async def on_handle(handle: JSON) -> None:
        handles.append(handle)
        assert not is_gone(handle["pid"])
        earliest, latest = handle["started_between"]
        assert earliest <= start_time(handle["pid"]) <= latest

    call = make_call(tmp_path, **sh("sleep 0.2; echo done"))
    result = await provider.apply(ActionCall(**{**_fields(call), "on_handle": on_handle}))
    assert len(handles) == 1
    assert handles[0]["pid"] == handles[0]["pgid"] == result.result["pid"]


async def test_cancelling_kills_the_whole_process_group(
    provider: LocalProvider, tmp_path: Path
) -> None:
    task = asyncio.create_task(provider.apply(make_call(tmp_path, **sh(SPAWNS_GRANDCHILD))))
    grandchild = int(await wait_for_file(tmp_path / "grandchild.pid"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(grandchild, timeout=1.0)


async def test_a_timeout_kills_the_whole_process_group(
    provider: LocalProvider, tmp_path: Path
) -> None:
    apply = provider.apply(make_call(tmp_path, **sh(f"echo $$ > leader.pid; {SPAWNS_GRANDCHILD}")))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(apply, timeout=0.5)
    assert is_gone(int((tmp_path / "leader.pid").read_text()))
    assert await wait_gone(int((tmp_path / "grandchild.pid").read_text()), timeout=1.0)


async def test_processes_ignoring_sigterm_are_killed_after_the_grace_period(
    tmp_path: Path,
) -> None:
    provider = LocalProvider("l", {"kill_grace": 0.2})
    script = f"trap '' TERM; {SPAWNS_GRANDCHILD}"
    task = asyncio.create_task(provider.apply(make_call(tmp_path, **sh(script))))
    grandchild = int(await wait_for_file(tmp_path / "grandchild.pid"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(grandchild, timeout=1.0)


async def test_cancel_by_task_id_kills_the_group_and_fails_the_apply(
    provider: LocalProvider, tmp_path: Path
) -> None:
    task = asyncio.create_task(provider.apply(make_call(tmp_path, "t9", **sh(SPAWNS_GRANDCHILD))))
    grandchild = int(await wait_for_file(tmp_path / "grandchild.pid"))
    await provider.cancel("t9")
    with pytest.raises(ProviderError, match="cancelled"):
        await task
    assert await wait_gone(grandchild, timeout=1.0)
    await provider.cancel("t9")  # nothing running any more: a no-op


@pytest.mark.parametrize("steps", range(6))
async def test_cancelling_while_the_command_starts_leaves_nothing_running(
    provider: LocalProvider, tmp_path: Path, steps: int
) -> None:
    task = asyncio.create_task(provider.apply(make_call(tmp_path, **sh(SPAWNS_GRANDCHILD))))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    pidfile = tmp_path / "grandchild.pid"
    if pidfile.exists() and pidfile.read_text().strip():
        assert await wait_gone(int(pidfile.read_text()), timeout=1.0)


async def test_cancel_by_task_id_while_the_command_starts_stops_it(
    provider: LocalProvider, tmp_path: Path
) -> None:
    task = asyncio.create_task(provider.apply(make_call(tmp_path, "t8", **sh(SPAWNS_GRANDCHILD))))
    await asyncio.sleep(0)  # the apply has begun to start the process
    await provider.cancel("t8")
    with pytest.raises(ProviderError, match="cancelled"):
        await asyncio.wait_for(task, timeout=5)


async def test_a_background_process_left_holding_the_output_does_not_block(
    provider: LocalProvider, tmp_path: Path
) -> None:
    script = "sleep 30 & echo $! > grandchild.pid; echo started"
    result = await asyncio.wait_for(provider.apply(make_call(tmp_path, **sh(script))), 5)
    assert result.output == "started\n"
    os.kill(int((tmp_path / "grandchild.pid").read_text()), signal.SIGKILL)


async def test_a_command_that_closes_its_output_early_is_waited_for_to_its_exit(
    provider: LocalProvider, tmp_path: Path
) -> None:
    script = "echo before; exec >&- 2>&-; sleep 0.3; touch finished; exit 3"
    with pytest.raises(ProviderError, match="exited with status 3: before"):
        await asyncio.wait_for(provider.apply(make_call(tmp_path, **sh(script))), 5)
    assert (tmp_path / "finished").exists()


async def test_without_a_pidfd_to_spare_a_thread_waits_for_the_exit(
    provider: LocalProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_descriptor_left(pid: int, flags: int = 0) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "pidfd_open", no_descriptor_left)
    script = "echo before; exec >&- 2>&-; sleep 0.2; exit 3"  # outlives its output
    with pytest.raises(ProviderError, match="exited with status 3: before"):
        await asyncio.wait_for(provider.apply(make_call(tmp_path, **sh(script))), 5)


def spawn_group(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A process group a previous orchestrator could have left behind."""
    return subprocess.Popen(["sh", "-c", SPAWNS_GRANDCHILD], cwd=tmp_path, start_new_session=True)


async def test_reap_kills_a_live_process_group_from_its_handle(
    provider: LocalProvider, tmp_path: Path
) -> None:
    leader = spawn_group(tmp_path)
    grandchild = int(await wait_for_file(tmp_path / "grandchild.pid"))
    handle = {"pid": leader.pid, "pgid": leader.pid, "start_time": start_time(leader.pid)}
    await provider.reap(handle)
    assert leader.wait(timeout=2) == -signal.SIGTERM
    assert await wait_gone(grandchild, timeout=1.0)
    await provider.reap(handle)  # already gone: a no-op


async def test_reap_stops_the_group_of_a_handle_recorded_by_an_earlier_provider(
    tmp_path: Path,
) -> None:
    handles: list[JSON] = []

    async def on_handle(handle: JSON) -> None:
        handles.append(handle)

    earlier = LocalProvider("local", {})
    call = make_call(tmp_path, "t9", **sh(SPAWNS_GRANDCHILD))
    apply = asyncio.create_task(
        earlier.apply(ActionCall(**{**_fields(call), "on_handle": on_handle}))
    )
    grandchild = int(await wait_for_file(tmp_path / "grandchild.pid"))
    await LocalProvider("local", {}).reap(handles[0])  # as a restarted orchestrator would
    assert await wait_gone(grandchild, timeout=1.0)
    with pytest.raises(ProviderError, match="signal SIGTERM"):
        await asyncio.wait_for(apply, 5)


@pytest.mark.parametrize("key", ["start_time", "started_between"])
async def test_reap_refuses_when_the_start_time_does_not_match(
    provider: LocalProvider, tmp_path: Path, key: str
) -> None:
    leader = spawn_group(tmp_path)
    grandchild = int(await wait_for_file(tmp_path / "grandchild.pid"))
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
    provider: LocalProvider, tmp_path: Path
) -> None:
    leader = spawn_group(tmp_path)
    grandchild = int(await wait_for_file(tmp_path / "grandchild.pid"))
    handle = {"pid": leader.pid, "pgid": leader.pid, "start_time": start_time(leader.pid)}
    leader.kill()  # only the leader: the grandchild stays in the group
    leader.wait()
    assert not is_gone(grandchild)
    await provider.reap(handle)
    assert await wait_gone(grandchild, timeout=1.0)


async def test_compensate_runs_the_undo_command(provider: LocalProvider, tmp_path: Path) -> None:
    undo = {"command": "rm", "args": ["made"]}
    call = make_call(tmp_path, command="touch", args=["made"], undo=undo)
    applied = await provider.apply(call)
    assert applied.reversible
    assert (tmp_path / "made").exists()
    await provider.compensate(call, applied)
    assert not (tmp_path / "made").exists()


async def test_compensate_without_undo_is_irreversible(
    provider: LocalProvider, tmp_path: Path
) -> None:
    call = make_call(tmp_path, command="true")
    with pytest.raises(PermanentProviderError, match="irreversible"):
        await provider.compensate(call, ActionResult())


async def test_check_validates_and_runs_nothing(provider: LocalProvider, tmp_path: Path) -> None:
    result = await provider.check(make_call(tmp_path, command="touch", args=["a file"]))
    assert result.output == "would run: touch 'a file'"
    assert result.resources == ()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PermanentProviderError, match="command not found"):
        await provider.check(make_call(tmp_path, command="no-such-command-xyz"))
    with pytest.raises(PermanentProviderError, match="command not found"):
        bad_undo = {"command": "no-such-undo-xyz"}
        await provider.check(make_call(tmp_path, command="true", undo=bad_undo))


def _fields(call: ActionCall) -> dict[str, Any]:
    return {name: getattr(call, name) for name in ActionCall.__dataclass_fields__}


def recording(tmp_path: Path) -> LocalProvider:
    return LocalProvider("local", {"record_exit": True, "state_dir": str(tmp_path / "state")})


async def test_with_record_exit_a_command_runs_as_usual_and_keeps_its_status(
    tmp_path: Path,
) -> None:
    provider = recording(tmp_path)
    result = await provider.apply(make_call(tmp_path, **sh("echo hi; echo err >&2")))
    assert result.output == "hi\nerr\n"
    # Kept until a recovery reads it: the end may not be committed yet.
    assert (tmp_path / "state" / "t1.1.exit").read_text() == "0\n"
    with pytest.raises(ProviderError, match="status 3"):
        await provider.apply(make_call(tmp_path, **sh("exit 3")))
    with pytest.raises(PermanentProviderError, match="command not found"):
        await provider.apply(make_call(tmp_path, command="no-such-command-here"))


async def test_finished_reports_a_command_that_exited_0_unwatched_once(tmp_path: Path) -> None:
    provider = recording(tmp_path)
    call = make_call(tmp_path, task_id="t9", **sh("true"), undo={"command": "true"})
    # What the wrapper leaves when nobody is left to read the command's end.
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "t9.1.exit").write_text("0\n")
    result = await provider.finished(call)
    assert result is not None and result.result["exit_code"] == 0 and result.reversible
    assert "[recovered" in result.output
    again = await provider.finished(call)  # the same answer (the store records one)
    assert again is not None and again.result == result.result
    (tmp_path / "state" / "t9.1.exit").write_text("3\n")
    assert await provider.finished(call) is None  # failed: retried by the policy
    assert await LocalProvider("local", {}).finished(call) is None  # not recording


async def test_the_wrapper_writes_the_status_even_when_its_caller_is_gone(tmp_path: Path) -> None:
    """The wrapper outlives the provider's process (kill -9 of a worker): run one
    through a child Python that is killed while the command still sleeps."""
    state = tmp_path / "state"
    script = f"""
import asyncio, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.unit.test_provider_local import make_call, sh
from providers.local import LocalProvider
from pathlib import Path
async def main():
    provider = LocalProvider("local", {{"record_exit": True, "state_dir": {str(state)!r}}})
    async def handle(h):
        print("started", flush=True)
    call = make_call(Path({str(tmp_path)!r}), task_id="t7", **sh("sleep 0.5; echo did > did"))
    from dataclasses import replace
    await provider.apply(replace(call, on_handle=handle))
asyncio.run(main())
"""
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stdout.readline() == b"started\n"
        child.kill()
    assert (await wait_for_file(state / "t7.1.exit")).strip() == "0"
    assert (tmp_path / "did").read_text() == "did\n"
    result = await recording(tmp_path).finished(make_call(tmp_path, task_id="t7", **sh("x")))
    assert result is not None


async def test_exit_statuses_older_than_a_week_are_removed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    old, recent = state / "old.1.exit", state / "recent.1.exit"
    for path in (old, recent):
        path.write_text("0\n")
    eight_days_ago = time.time() - 8 * 86400
    os.utime(old, (eight_days_ago, eight_days_ago))
    await recording(tmp_path).apply(make_call(tmp_path, **sh("true")))
    assert not old.exists() and recent.exists()


def test_on_uvloop_as_serve_and_worker_run_it(tmp_path: Path) -> None:
    """The loop the product runs on: output, exit statuses and a cancelled group."""
    import uvloop

    async def scenario() -> None:
        provider = LocalProvider("local", {"kill_grace": 0.5})
        done = await provider.apply(make_call(tmp_path, **sh("echo out; echo err >&2")))
        assert done.output == "out\nerr\n"
        with pytest.raises(ProviderError, match="exited with status 3"):
            await provider.apply(make_call(tmp_path, **sh("exit 3")))
        running = asyncio.create_task(
            provider.apply(make_call(tmp_path, "t2", **sh(SPAWNS_GRANDCHILD)))
        )
        grandchild = int(await wait_for_file(tmp_path / "grandchild.pid"))
        await provider.cancel("t2")
        with pytest.raises(ProviderError, match="cancelled"):
            await asyncio.wait_for(running, 5)
        assert await wait_gone(grandchild, timeout=2.0)

    uvloop.run(scenario())
