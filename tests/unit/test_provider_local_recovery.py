"""The local provider across a crash of its orchestrator: the start gate, the exit file,
the spooled output. Real processes; the "orchestrator" that dies is a child Python
process, killed with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.base import JSON, ProviderError
from providers.local import LocalProvider
from tests.local_commands import (
    eventually,
    is_gone,
    make_call,
    open_directory,
    require_default_isolation,
    sh,
    wait_for_file,
    wait_gone,
)

pytestmark = [
    pytest.mark.backend_independent,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc"),
]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _default_isolation() -> None:
    require_default_isolation()


@pytest.fixture
def workspace() -> Iterator[Path]:
    with open_directory("provisioning-local-") as path:
        yield path


def local(workspace: Path, **config: Any) -> LocalProvider:
    return LocalProvider("local", {"state_dir": str(workspace / ".state"), **config})


def blocked_reading_a_pipe(pid: int) -> bool:
    """The process sleeps in a read of a pipe (the wrapper, waiting for its go)."""
    try:
        return "pipe" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


# -- the exit file and the spool, in the default (safe) mode -----------------------------


async def test_a_finished_command_leaves_its_status_and_output_for_a_recovery(
    workspace: Path,
) -> None:
    provider = local(workspace)
    result = await provider.apply(make_call(workspace, **sh("echo hi; echo err >&2")))
    assert result.output == "hi\nerr\n"
    # Kept until a recovery may need them: the end may not be committed yet.
    assert (workspace / ".state" / "t1.1.exit").read_text() == "0\n"
    assert (workspace / ".state" / "t1.1.out").read_text() == "hi\nerr\n"


@pytest.mark.parametrize("script", ["echo failing; exit 3", "kill -TERM $$"])
async def test_an_attempt_that_did_not_succeed_leaves_no_file(workspace: Path, script: str) -> None:
    with pytest.raises(ProviderError):
        await local(workspace).apply(make_call(workspace, **sh(script)))
    assert list((workspace / ".state").iterdir()) == []


async def test_a_cancelled_attempt_leaves_no_file(workspace: Path) -> None:
    provider = local(workspace, kill_grace=0.5)
    running = asyncio.create_task(provider.apply(make_call(workspace, **sh("echo x; sleep 30"))))
    await wait_for_file(workspace / ".state" / "t1.1.out")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert list((workspace / ".state").iterdir()) == []


async def test_finished_reads_the_exit_status_and_the_output_left(workspace: Path) -> None:
    provider = local(workspace)
    call = make_call(workspace, task_id="t9", **sh("true"), undo={"command": "true"})
    state = workspace / ".state"
    state.mkdir(mode=0o700)
    # What the wrapper leaves when nobody is left to read the command's end.
    (state / "t9.1.exit").write_text("0\n")
    (state / "t9.1.out").write_text("made it\n")
    result = await provider.finished(call)
    assert result is not None and result.output == "made it\n"
    assert result.result["exit_code"] == 0 and result.reversible
    again = await provider.finished(call)  # the same answer (the store records one)
    assert again is not None and again.output == result.output
    (state / "t9.1.out").unlink()  # left by an earlier version, which kept no output
    result = await provider.finished(call)
    assert result is not None and result.output.startswith("[recovered")
    (state / "t9.1.exit").write_text("3\n")
    assert await provider.finished(call) is None  # failed: retried by the policy
    (state / "t9.1.exit").write_text("0\n")
    assert await local(workspace, record_exit=False).finished(call) is None  # fast mode


async def test_files_older_than_a_week_are_removed(workspace: Path) -> None:
    state = workspace / ".state"
    state.mkdir(mode=0o700)
    old = [state / "old.1.exit", state / "old.1.out"]
    recent = [state / "recent.1.exit", state / "recent.1.out"]
    for path in old + recent:
        path.write_text("0\n")
    eight_days_ago = time.time() - 8 * 86400
    for path in old:
        os.utime(path, (eight_days_ago, eight_days_ago))
    await local(workspace).apply(make_call(workspace, **sh("true")))
    await eventually(lambda: not any(path.exists() for path in old))  # (in a thread)
    assert all(path.exists() for path in recent)


async def test_in_the_fast_mode_nothing_is_left_behind(workspace: Path) -> None:
    provider = local(workspace, record_exit=False, isolation="none")
    result = await provider.apply(make_call(workspace, **sh("echo fast")))
    assert result.output == "fast\n"
    assert list((workspace / ".state").iterdir()) == []  # its output had no name


async def test_the_spool_of_a_command_printing_a_lot_stays_small(workspace: Path) -> None:
    provider = local(workspace, max_output_bytes=1000)
    total = 8 << 20
    script = f"head -c {total} /dev/zero; while [ ! -e proceed ]; do sleep 0.01; done; echo end"
    running = asyncio.create_task(provider.apply(make_call(workspace, **sh(script))))
    spool = workspace / ".state" / "t1.1.out"

    def written_then_trimmed() -> bool:
        info = spool.stat() if spool.exists() else None
        return info is not None and info.st_size == total and info.st_blocks * 512 <= 2 << 20

    try:
        await eventually(written_then_trimmed)  # while the command still runs
    finally:
        (workspace / "proceed").touch()
    result = await running
    assert result.output == f"[output truncated: {total + 4 - 1000} earlier bytes dropped]\n" + (
        "\0" * 996 + "end\n"
    )
    assert spool.stat().st_blocks * 512 <= 8192  # what a recovery would read, no more


# -- the start gate -------------------------------------------------------------------


async def test_a_command_does_not_start_until_on_handle_has_returned(workspace: Path) -> None:
    async def on_handle(handle: JSON) -> None:
        wrapper = handle["pid"]
        await eventually(lambda: blocked_reading_a_pipe(wrapper))
        assert not (workspace / "started").exists()
        assert children(wrapper) == []

    call = make_call(workspace, on_handle=on_handle, **sh("touch started"))
    await local(workspace).apply(call)
    assert (workspace / "started").exists()


async def test_a_command_whose_handle_was_not_recorded_never_starts(workspace: Path) -> None:
    handles: list[JSON] = []

    async def on_handle(handle: JSON) -> None:
        handles.append(handle)
        raise OSError("the attempt log is full")

    call = make_call(workspace, on_handle=on_handle, **sh("touch started"))
    with pytest.raises(OSError, match="attempt log"):
        await local(workspace).apply(call)
    assert await wait_gone(handles[0]["pid"])
    assert not (workspace / "started").exists()
    assert list((workspace / ".state").iterdir()) == []


async def test_a_command_cancelled_while_its_handle_is_recorded_never_starts(
    workspace: Path,
) -> None:
    provider = local(workspace, kill_grace=0.5)
    recording, recorded = asyncio.Event(), asyncio.Event()

    async def on_handle(handle: JSON) -> None:
        recording.set()
        await recorded.wait()

    call = make_call(workspace, "t4", on_handle=on_handle, **sh("touch started"))
    running = asyncio.create_task(provider.apply(call))
    await recording.wait()
    await provider.cancel("t4")
    recorded.set()
    with pytest.raises(ProviderError, match="cancelled"):
        await running
    assert not (workspace / "started").exists()


def orchestrator(workspace: Path, script: str, *, record: bool = True) -> subprocess.Popen[str]:
    """A Python process that applies `script` in `workspace` as task t7 and prints the
    command's handle once it has it; with `record` false, it never returns from
    `on_handle` (it dies recording it, as it were)."""
    program = f"""
import asyncio, json, sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from providers.local import LocalProvider
from tests.local_commands import make_call, sh

async def main():
    workspace = Path({str(workspace)!r})
    provider = LocalProvider("local", {{"state_dir": str(workspace / ".state")}})
    async def on_handle(handle):
        print(json.dumps(handle), flush=True)
        if not {record!r}:
            await asyncio.Event().wait()
    await provider.apply(make_call(workspace, "t7", on_handle=on_handle, **sh({script!r})))

asyncio.run(main())
"""
    return subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)


async def test_a_command_never_starts_if_its_orchestrator_dies_before_recording_it(
    workspace: Path,
) -> None:
    with orchestrator(workspace, "touch started", record=False) as child:
        try:
            assert child.stdout is not None
            wrapper = json.loads(child.stdout.readline())["pid"]
        finally:
            child.send_signal(signal.SIGKILL)
    assert await wait_gone(wrapper)  # it read the end of its gate: nothing more
    assert not (workspace / "started").exists()
    assert not (workspace / ".state" / "t7.1.exit").exists()


async def test_a_chatty_command_outlives_the_orchestrator_that_started_it(
    workspace: Path,
) -> None:
    """Its output goes to a file, not to a pipe that the dead orchestrator was reading
    (which killed it with SIGPIPE at its next line); its end and its output are then
    what `finished` tells the next orchestrator."""
    script = (
        'i=0; while [ ! -e proceed ]; do echo "line $i"; i=$((i+1)); sleep 0.01; done; echo done'
    )
    spool = workspace / ".state" / "t7.1.out"
    with orchestrator(workspace, script) as child:
        try:
            await eventually(lambda: spool.exists() and b"line 1\n" in spool.read_bytes())
        finally:
            child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    printed = spool.stat().st_size
    await eventually(lambda: spool.stat().st_size > printed)  # it goes on printing
    (workspace / "proceed").touch()
    assert await wait_for_file(workspace / ".state" / "t7.1.exit") == "0"
    result = await local(workspace).finished(make_call(workspace, "t7", **sh(script)))
    assert result is not None
    assert result.output.startswith("line 0\nline 1\n") and result.output.endswith("\ndone\n")


async def test_a_command_killed_with_its_orchestrator_is_not_reported_finished(
    workspace: Path,
) -> None:
    script = "echo running; sleep 30"
    with orchestrator(workspace, script) as child:
        try:
            assert child.stdout is not None
            handle = json.loads(child.stdout.readline())
            await wait_for_file(workspace / ".state" / "t7.1.out")
        finally:
            child.send_signal(signal.SIGKILL)
    provider = local(workspace, kill_grace=0.5)
    await provider.reap(handle)  # as the next orchestrator does first
    assert is_gone(handle["pid"])
    assert await provider.finished(make_call(workspace, "t7", **sh(script))) is None
