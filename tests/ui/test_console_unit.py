"""The console's pure parts: the DAG layout, the CSRF token, escaping in the templates."""

from __future__ import annotations

import re

import pytest

from control_center.gate import Gate
from orchestrator.http.access import Principal
from orchestrator.settings import AuthSettings, Settings
from orchestrator.ui.dag import layout
from orchestrator.ui.routes import templates
from orchestrator.ui.session import csrf_valid

pytestmark = pytest.mark.backend_independent


def task(name: str, deps: tuple[str, ...] = (), soft: tuple[str, ...] = (), **extra: object):
    return {
        "id": name,
        "name": name,
        "status": "Pending",
        "dependencies": list(deps),
        "soft_dependencies": list(soft),
        **extra,
    }


def test_layers_are_the_longest_path_from_the_roots():
    graph = layout(
        [
            task("a"),
            task("b", ("a",)),
            task("c", ("a", "b")),
            task("d"),
            task("undo", ("c",), ("c",), compensates="c"),
        ]
    )
    layers = {n.id: n.layer for n in graph.nodes}
    assert layers == {"a": 0, "d": 0, "b": 1, "c": 2, "undo": 3}
    soft = {(e.source, e.target) for e in graph.edges if e.soft}
    assert soft == {("c", "undo")}
    assert len(graph.edges) == 4
    nodes = {n.id: n for n in graph.nodes}
    assert nodes["undo"].compensation and not nodes["c"].compensation
    # Every edge points rightwards, and no two nodes overlap.
    for edge in graph.edges:
        assert nodes[edge.source].x < nodes[edge.target].x
    assert len({(n.x, n.y) for n in graph.nodes}) == len(graph.nodes)
    assert graph.width > nodes["undo"].x and graph.height > max(n.y for n in graph.nodes)


def test_a_thousand_tasks_are_laid_out():
    tasks = [task(f"t{i}", (f"t{i // 2}",) if i else ()) for i in range(1000)]
    graph = layout(tasks)
    assert len(graph.nodes) == 1000 and len(graph.edges) == 999
    # t_i hangs under t_(i // 2), and t1 under t0: the deepest, t512…t999, are at 10
    assert max(n.layer for n in graph.nodes) == 10


def test_an_empty_workflow_and_unknown_dependencies():
    assert layout([]).nodes == []
    graph = layout([task("a", ("gone",))])
    assert [n.layer for n in graph.nodes] == [0] and graph.edges == []


def test_the_csrf_token_belongs_to_one_session_and_one_servers_key(tmp_path):
    def gate(key: str) -> Gate:
        settings = Settings(data_dir=str(tmp_path), auth=AuthSettings(secrets_key=key * 32))
        return Gate(engine=None, settings=settings)  # type: ignore[arg-type]

    ours, theirs = gate("s"), gate("t")
    token = ours.csrf_token("session-a")
    assert token == ours.csrf_token("session-a")  # stable: a form outlives renewals
    assert csrf_valid(ours.csrf_token("session-a"), token)
    assert not csrf_valid(ours.csrf_token("session-b"), token)
    # Knowing the session's id is not enough: the key is the server's.
    assert not csrf_valid(theirs.csrf_token("session-a"), token)
    assert not csrf_valid(token, None)
    assert not csrf_valid("", "")
    assert "session-a" not in token


def test_task_output_error_and_params_are_escaped():
    hostile = "<script>alert(1)</script>"
    html = templates.get_template("task_panel.html").render(
        task={
            "id": "t1",
            "name": f"name {hostile}",
            "status": "Failed",
            "provider": "local",
            "action": "run",
            "attempts": 1,
            "max_attempts": 1,
            "compensates": None,
            "params": {"command": hostile},
            "output": hostile,
            "error": f"failed: {hostile}",
            "result": None,
        },
        attempts=[
            {
                "number": 1,
                "started": "2026-01-01T00:00:00",
                "ended": None,
                "outcome": "Failed",
                "error": hostile,
            }
        ],
    )
    assert "<script>" not in html
    assert html.count("&lt;script&gt;") == 5


def test_no_template_has_an_inline_script_or_style():
    for name in templates.list_templates():
        source = templates.loader.get_source(templates, name)[0]  # type: ignore[union-attr]
        assert not re.search(r"<script(?![^>]*\bsrc=)", source), name
        assert "<style" not in source and " style=" not in source, name
        assert not re.search(r"\son[a-z]+=", source), name  # no onclick=…


def test_the_workflow_page_renders_buttons_only_when_allowed():
    user = Principal("u1", "ann", ("viewer",), "jwt")
    flow = {
        "id": "w1",
        "name": "w",
        "status": "Running",
        "kind": "batch",
        "check_mode": False,
        "error": None,
        "task_counts": {"Running": 1},
    }
    context = {
        "user": user,
        "csrf": "x",
        "csrf_field": "_csrf",
        "workflow": flow,
        "graph": layout([task("a")]),
        "since": 0,
        "final": False,
        "progress": {
            "status": "Running",
            "progress": 0.0,
            "completed_steps": 0,
            "total_steps": 1,
            "current_step": "a",
            "estimated_time_remaining": None,
        },
        "operations": [],
    }
    template = templates.get_template("workflow.html")
    bare = template.render(**context, can_cancel=False, can_rollback=False)
    assert 'id="cancel"' not in bare and 'id="rollback"' not in bare
    full = template.render(**context, can_cancel=True, can_rollback=True)
    assert 'id="cancel"' in full and 'id="rollback"' in full
