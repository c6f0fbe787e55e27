"""The request checks that run before anything is built from a body (pure): the JSON
depth scan, the limited YAML loader, the batch size limits."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.api.schemas import WORKSPACE_NAME
from orchestrator.batch import Batch, plan_batch
from orchestrator.errors import InvalidInput
from orchestrator.http.limits import BadBody, BodyLimits, TooDeep, check_json_depth, json_depth
from orchestrator.http.limits import load_yaml as limited_yaml
from orchestrator.planner import TaskLimits
from orchestrator.resources import Catalog
from orchestrator.workspace import NAME

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent

LIMITS = BodyLimits(depth=64, nodes=100_000)
#: Strings full of what a scanner could mistake for structure.
TRICKY = st.text(alphabet='[]{}"\\,:ab \n\t\u00e9', max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@given(JSON_VALUES, st.booleans())
def test_the_depth_scan_measures_any_json_exactly(value, ascii_only):
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert json_depth(body) == depth(value)


def test_a_body_at_the_limit_passes_and_one_level_more_is_refused():
    check_json_depth(b"[" * 64 + b"]" * 64, 64)
    check_json_depth(b'{"a": "' + b"[" * 500 + b'"}', 64)  # brackets in a string
    with pytest.raises(TooDeep, match=r"64 levels .*server\.max_body_depth"):
        check_json_depth(b"[" * 65 + b"]" * 65, 64)
    with pytest.raises(TooDeep):
        check_json_depth(b'{"a": ' * 2000 + b"1" + b"}" * 2000, 64)


@given(JSON_VALUES)
def test_the_limited_yaml_loader_reads_what_safe_load_reads(value):
    text = yaml.safe_dump(value).encode()
    assert limited_yaml(text, LIMITS) == yaml.safe_load(text)


def test_aliases_are_counted_as_what_they_stand_for():
    assert limited_yaml(b"a: &x [1, 2]\nb: *x\nc: {<<: {k: 1}}\n", LIMITS) == {
        "a": [1, 2],
        "b": [1, 2],
        "c": {"k": 1},
    }
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(6)
    ]
    bomb = "\n".join(levels).encode()  # 10**7 nodes in a few hundred bytes
    assert len(bomb) < 700
    with pytest.raises(InvalidInput, match=r"more than 100000 nodes.*server\.max_body_nodes"):
        limited_yaml(bomb, LIMITS)


def test_deep_or_self_referring_yaml_is_refused():
    with pytest.raises(TooDeep):
        limited_yaml(b"- " * 2000 + b"x", LIMITS)
    with pytest.raises(TooDeep):
        limited_yaml(b"[" * 100 + b"]" * 100, LIMITS)
    with pytest.raises(InvalidInput, match="alias inside its own anchor"):
        limited_yaml(b"&a [*a]", LIMITS)
    with pytest.raises(BadBody, match="not valid YAML"):
        limited_yaml(b"!!python/object/apply:os.system [true]", LIMITS)


def test_a_batch_too_big_is_refused_before_its_tasks_are_built():
    wide = {
        "id": "everything",
        "type": "taskserv_batch",
        "provider": "upcloud",
        "taskservs": [f"t{i}" for i in range(40)],
        "servers": [f"s{i}" for i in range(30)],
    }
    batch = msgspec.convert({"name": "wide", "operations": [wide]}, Batch)
    upcloud = Catalog.configure({"upcloud": {"type": "sim"}})
    with pytest.raises(InvalidInput, match=r"1200 tasks; at most 1000 .*max_tasks_per_operation"):
        plan_batch(batch, upcloud, TaskLimits(per_operation=1000, per_workflow=10_000))
    with pytest.raises(InvalidInput, match=r"1200 tasks; at most 500 .*max_tasks_per_workflow"):
        plan_batch(batch, upcloud, TaskLimits(per_operation=2000, per_workflow=500))
    spec = plan_batch(batch, upcloud, TaskLimits(per_operation=1200, per_workflow=1200))
    assert len(spec.tasks) == 1200


def test_workspace_names_follow_the_workspace_rule():
    assert NAME.pattern == WORKSPACE_NAME
