"""The CLI as a newcomer meets it (issue 20): short ids, errors in CLI terms, output
formats, completion, contexts and confirmation prompts. A real server on loopback, the
CLI as a subprocess with no terminal."""

from __future__ import annotations

import json

from tests.e2e.test_cli import run, slow_task, submit
from tests.servers import OrchestratorProcess


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
    assert done.stderr.strip() == (
        "error: no workflow has an id starting or ending with 'zzzzzzzz' (NOT_FOUND)"
    )


def test_checkpoint_show_takes_a_short_id(server):
    created = run("checkpoint", "create", "short-ids", url=server.url)
    assert created.returncode == 0, created.stderr
    checkpoint_id = created.stdout.strip()
    shown = run("checkpoint", "show", checkpoint_id[-12:], "--json", url=server.url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == checkpoint_id
