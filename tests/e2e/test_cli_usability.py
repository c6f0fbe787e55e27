"""The CLI as a newcomer meets it (issue 20): short ids, errors in CLI terms, output
formats, completion, contexts and confirmation prompts. A real server on loopback, the
CLI as a subprocess with no terminal."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import yaml

from tests.e2e.test_cli import run, slow_task, submit
from tests.servers import PROVISIONING, OrchestratorProcess, free_port


def _create(server: OrchestratorProcess) -> str:
    done = run("workflow", "servers", "create", "--infra", "production", url=server.url)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- short ids ------------------------------------------------------------------------------


def test_workflow_wait_and_show_take_the_short_id_the_table_shows(server):
    workflow_id = _create(server)
    table = run("workflow", "list", url=server.url)
    short = workflow_id[-12:]
    assert short in table.stdout and workflow_id not in table.stdout
    waited = run("workflow", "wait", short, url=server.url)
    assert waited.returncode == 0, waited.stderr
    assert f"workflow {workflow_id} Completed" in waited.stdout
    shown = run("workflow", "show", short, "--json", url=server.url)
    assert json.loads(shown.stdout)["id"] == workflow_id
    tasks = run("tasks", "list", "--workflow", short, "--json", url=server.url)
    assert {t["workflow_id"] for t in json.loads(tasks.stdout)} == {workflow_id}
    task_id = json.loads(tasks.stdout)[0]["id"]
    task = run("tasks", "show", task_id[-12:], "--json", url=server.url)
    assert json.loads(task.stdout)["id"] == task_id
    progress = run("state", "progress", short, "--json", url=server.url)
    assert progress.returncode == 0, progress.stderr
    assert json.loads(progress.stdout)["workflow_id"] == workflow_id


def test_an_ambiguous_short_id_names_the_candidates(server):
    first = submit(server, [slow_task("a")], name="first")
    second = submit(server, [slow_task("b")], name="second")
    common = first[: next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)]
    assert common, (first, second)  # time-ordered ids made together share their head
    done = run("workflow", "cancel", common, url=server.url)
    assert done.returncode == 1
    assert "(AMBIGUOUS_ID)" in done.stderr
    assert first in done.stderr and second in done.stderr
    assert " first)" in done.stderr and " second)" in done.stderr
    for workflow_id in (first, second):
        cancelled = run("workflow", "cancel", workflow_id[-12:], url=server.url)
        assert cancelled.returncode == 0, cancelled.stderr


def test_an_unknown_short_id_is_not_found(server):
    done = run("workflow", "wait", "zzzzzzzz", url=server.url)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: workflow 'zzzzzzzz' not found (NOT_FOUND)")


def test_checkpoint_show_takes_a_short_id(server):
    created = run("checkpoint", "create", "short-ids", url=server.url)
    assert created.returncode == 0, created.stderr
    checkpoint_id = created.stdout.strip()
    shown = run("checkpoint", "show", checkpoint_id[-12:], "--json", url=server.url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == checkpoint_id


# -- output ---------------------------------------------------------------------------------


def test_lists_and_gets_print_yaml_json_and_wide(server):
    workflow_id = _create(server)
    as_json = json.loads(run("workflow", "list", "-o", "json", url=server.url).stdout)
    as_yaml = yaml.safe_load(run("workflow", "list", "-o", "yaml", url=server.url).stdout)
    assert workflow_id in [w["id"] for w in as_yaml]
    assert [w["id"] for w in as_yaml] == [w["id"] for w in as_json]
    assert as_json == json.loads(run("--json", "workflow", "list", url=server.url).stdout)
    shown = yaml.safe_load(
        run("-o", "yaml", "workflow", "show", workflow_id, url=server.url).stdout
    )
    assert shown["id"] == workflow_id
    wide = run("workflow", "list", "-o", "wide", url=server.url)
    assert workflow_id in wide.stdout
    table = run("workflow", "list", "-o", "table", url=server.url)
    assert workflow_id not in table.stdout and workflow_id[-12:] in table.stdout
    checkpoint = yaml.safe_load(run("checkpoint", "list", "-o", "yaml", url=server.url).stdout)
    assert isinstance(checkpoint, list)
    bad = run("workflow", "list", "-o", "xml", url=server.url)
    assert bad.returncode == 2 and "'xml' is not one of" in bad.stderr


def test_workflow_wait_and_create_with_json_keep_stdout_for_the_workflow(server):
    done = run(
        "workflow", "servers", "create", "--infra", "production", "--wait", "--json", url=server.url
    )
    assert done.returncode == 0, done.stderr
    ended = json.loads(done.stdout)
    assert ended["status"] == "Completed"
    assert "submitted" in done.stderr and f"workflow {ended['id']} Completed" in done.stderr
    waited = run("workflow", "wait", ended["id"][-12:], "--json", url=server.url)
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["id"] == ended["id"]


def test_tasks_list_shows_the_newest_first(server):
    older = _create(server)
    newer = _create(server)
    for workflow_id in (older, newer):
        assert run("workflow", "wait", workflow_id, url=server.url).returncode == 0
    listed = json.loads(run("tasks", "list", "--json", "--limit", "6", url=server.url).stdout)
    created = [t["created_at"] for t in listed]
    assert created == sorted(created, reverse=True)
    assert listed[0]["workflow_id"] == newer
    table = run("tasks", "list", "--limit", "2", url=server.url)
    assert "2 of" in table.stdout and "next: --offset 2" in table.stdout
    second = json.loads(
        run("tasks", "list", "--json", "--limit", "2", "--offset", "2", url=server.url).stdout
    )
    assert [t["id"] for t in second] == [t["id"] for t in listed[2:4]]


def test_watch_on_a_workflows_tasks_ends_when_the_workflow_ends(server):
    quick = {
        "name": "q",
        "provider": "upcloud",
        "action": "noop",
        "params": {"simulate": {"latency": 2}},
    }
    workflow_id = submit(
        server, [quick, {**quick, "name": "r", "dependencies": ["q"]}], name="watched"
    )
    done = run("tasks", "list", "--workflow", workflow_id[-12:], "--watch", url=server.url)
    assert done.returncode == 0, done.stderr
    last = done.stdout.split("\n\n")[-1]
    assert last.count("Completed") == 2, done.stdout
    assert "2 of 2 tasks" in last
    as_json = run(
        "tasks", "list", "--workflow", workflow_id, "--watch", "-o", "json", url=server.url
    )
    assert as_json.returncode == 0, as_json.stderr
    assert {t["status"] for t in json.loads(as_json.stdout)} == {"Completed"}


# -- completion -----------------------------------------------------------------------------


def test_completion_bash_completes_commands_when_sourced():
    source = run("completion", "bash")
    assert source.returncode == 0, source.stderr
    assert "_PROVISIONING_COMPLETE=bash_complete" in source.stdout
    script = (
        f"{source.stdout}\n"
        "COMP_WORDS=(provisioning work); COMP_CWORD=1; _provisioning_completion provisioning\n"
        'echo "${COMPREPLY[@]}"\n'
        "COMPREPLY=(); COMP_WORDS=(provisioning workflow w); COMP_CWORD=2\n"
        '_provisioning_completion provisioning; echo "${COMPREPLY[@]}"\n'
    )
    path = os.pathsep.join([str(Path(PROVISIONING).parent), os.environ.get("PATH", "")])
    done = subprocess.run(
        ["bash", "--norc", "-c", script],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["worker workflow", "wait"]


def test_completion_zsh_and_fish_print_their_scripts():
    zsh = run("completion", "zsh")
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef provisioning")
    assert "_PROVISIONING_COMPLETE=zsh_complete" in zsh.stdout
    fish = run("completion", "fish")
    assert fish.returncode == 0
    assert "complete --no-files --command provisioning" in fish.stdout
    assert "_PROVISIONING_COMPLETE=fish_complete" in fish.stdout
    assert run("completion", "tcsh").returncode == 2


# -- contexts -------------------------------------------------------------------------------


def test_contexts_hold_a_url_each_and_use_switches_between_them(server, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path), "PROVISIONING_TOKEN": server.token}
    added = run(
        "context", "add", "here", "--url", server.url, "--cc-url", "http://127.0.0.1:9", env=env
    )
    assert added.returncode == 0, added.stderr
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert run("context", "add", "gone", "--url", nowhere, env=env).returncode == 0
    again = run("context", "add", "here", "--url", nowhere, env=env)
    assert again.returncode == 1 and "exists" in again.stderr
    stored = tmp_path / "provisioning" / "contexts.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700

    assert run("context", "use", "here", env=env).returncode == 0
    listed = run("workflow", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    other = run("--context", "gone", "workflow", "list", env=env)
    assert other.returncode == 1 and f"cannot reach the orchestrator at {nowhere}" in other.stderr
    via_env = run("workflow", "list", env={**env, "PROVISIONING_CONTEXT": "gone"})
    assert via_env.returncode == 1 and nowhere in via_env.stderr
    contexts = json.loads(run("context", "list", "-o", "json", env=env).stdout)
    assert [(c["name"], c["current"], c["url"]) for c in contexts] == [
        ("gone", False, nowhere),
        ("here", True, server.url),
    ]
    table = run("context", "list", env=env).stdout
    assert any(line.split()[:2] == ["*", "here"] for line in table.splitlines()), table

    unknown = run("--context", "nope", "workflow", "list", env=env)
    assert unknown.returncode == 1
    assert "no context named 'nope'" in unknown.stderr

    deleted = run("context", "delete", "here", "--yes", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert [c["name"] for c in json.loads(run("context", "list", "--json", env=env).stdout)] == [
        "gone"
    ]


# -- confirmation ---------------------------------------------------------------------------


def test_destructive_commands_without_a_terminal_need_yes(server):
    created = run("checkpoint", "create", "confirm-me", url=server.url)
    checkpoint_id = created.stdout.strip()
    refused = run("checkpoint", "delete", checkpoint_id, url=server.url)
    assert refused.returncode == 1
    assert refused.stderr == (
        f"error: delete checkpoint {checkpoint_id}: refused, as there is no terminal to "
        "confirm on; pass --yes to do it\n"
    )
    assert json.loads(run("checkpoint", "show", checkpoint_id, "--json", url=server.url).stdout)
    rollback = run("rollback", "--checkpoint", checkpoint_id, url=server.url)
    assert rollback.returncode == 1 and "pass --yes" in rollback.stderr
    for command in (("vm", "delete", "x"), ("vm", "force-stop", "x")):
        done = run(*command, url=server.url)
        assert done.returncode == 1 and "pass --yes" in done.stderr, command
    deleted = run("checkpoint", "delete", checkpoint_id, "--yes", url=server.url)
    assert deleted.returncode == 0, deleted.stderr
    gone = run("checkpoint", "show", checkpoint_id, url=server.url)
    assert gone.returncode == 1 and "(NOT_FOUND)" in gone.stderr


def test_a_terminal_is_asked_and_no_does_nothing(server):
    import pty

    created = run("checkpoint", "create", "ask-me", url=server.url)
    checkpoint_id = created.stdout.strip()
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONING_")}
    command = [PROVISIONING, "--url", server.url, "--token", server.token]
    for answer, code in (("n", 1), ("y", 0)):
        leader, follower = pty.openpty()
        try:
            process = subprocess.Popen(
                [*command, "checkpoint", "delete", checkpoint_id[-12:]],
                env=base,
                stdin=follower,
                stdout=subprocess.DEVNULL,
                stderr=follower,
            )
            os.close(follower)
            seen = b""
            while b"[y/N]" not in seen:
                seen += os.read(leader, 1024)
            os.write(leader, f"{answer}\n".encode())
            process.wait(timeout=60)
        finally:
            os.close(leader)
        assert f"delete checkpoint {checkpoint_id}?".encode() in seen
        assert process.returncode == code
    gone = run("checkpoint", "show", checkpoint_id, url=server.url)
    assert gone.returncode == 1 and "(NOT_FOUND)" in gone.stderr
