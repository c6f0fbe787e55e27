"""The catalog (`orchestrator/resources.py`): declared kinds planned, validated and named
for policies; types that declare nothing kept free-form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec
import pytest

from orchestrator.errors import InvalidInput, NotFound
from orchestrator.resources import Catalog
from orchestrator.specs import TaskSpec, WorkflowSpec
from providers.base import (
    ActionCall,
    ActionResult,
    InvalidParams,
    Kind,
    Operation,
    ProviderConfigError,
)
from providers.kinds import check_kinds, convert_params
from providers.local import LocalProvider
from providers.sim import SimProvider

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


class FreeForm:
    """A third-party type from before declarations: any action, any params."""

    type_name: ClassVar[str] = "freeform"

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.name = name

    async def apply(self, call: ActionCall) -> ActionResult:
        return ActionResult()

    async def compensate(self, call: ActionCall, applied: ActionResult) -> ActionResult:
        return ActionResult()

    async def check(self, call: ActionCall) -> ActionResult:
        return ActionResult()

    async def cancel(self, task_id: str) -> None: ...

    async def reap(self, handle: dict[str, Any]) -> None: ...

    async def finished(self, call: ActionCall) -> ActionResult | None:
        return None


@pytest.fixture
def catalog() -> Catalog:
    providers = {
        "upcloud": SimProvider("upcloud", {"plans": ["small"], "zones": ["de-fra1"]}),
        "local": LocalProvider("local", {}),
        "legacy": FreeForm("legacy", {}),
    }
    return Catalog(providers, {"upcloud": "sim", "local": "local", "legacy": "freeform"})


def workflow(*tasks: TaskSpec) -> WorkflowSpec:
    return WorkflowSpec(kind="custom", name="w", tasks=list(tasks))


def test_a_declared_operation_becomes_its_action(catalog: Catalog) -> None:
    params = {"name": "web-01", "plan": "small", "zone": "de-fra1"}
    task = catalog.task("upcloud", "server", "create", name="s", params=params, origin="o")
    assert (task.action, task.command, task.args) == (
        "server.create",
        "upcloud server.create",
        ["web-01"],
    )


def test_an_undeclared_kind_is_done_by_the_operation_standing_in(catalog: Catalog) -> None:
    params = {"name": "web-01", "command": "make", "args": ["web"]}
    task = catalog.task("local", "server", "create", name="s", params=params, origin="o")
    assert (task.action, task.command, task.args) == ("run", "make", ["web"])


def test_a_type_without_the_kind_nor_a_stand_in_refuses_it(catalog: Catalog) -> None:
    with pytest.raises(
        InvalidInput, match=r"^o\.provider: 'upcloud' \(sim\) has no operation vm\.create"
    ):
        catalog.task("upcloud", "vm", "create", name="v", params={}, origin="o")
    with pytest.raises(InvalidInput, match=r"^o\.provider: 'gcp' is not a configured provider"):
        catalog.task("gcp", "server", "create", name="v", params={}, origin="o")


def test_a_type_that_declares_nothing_stays_free_form(catalog: Catalog) -> None:
    task = catalog.task("legacy", "vm", "create", name="v", params={"name": "vm-1"}, origin="o")
    assert task.action == "vm.create"
    catalog.validate(workflow(TaskSpec("t", "legacy", "anything", {"whatever": [1]})))
    spec = workflow(task, TaskSpec("u", "legacy", "ping", {}))
    assert catalog.items(spec) == [("create", "vms:vm-1")]


def test_params_are_refused_naming_the_field(catalog: Catalog) -> None:
    bad = TaskSpec("t", "upcloud", "server.create", {"name": "a", "plan": "big", "zone": "de-fra1"})
    with pytest.raises(InvalidInput) as caught:
        catalog.validate(workflow(TaskSpec("ok", "upcloud", "noop"), bad))
    assert caught.value.message == "tasks[1].params.plan: unknown plan 'big'; valid: small"
    bad.origin = "operations[0].server_configs[3]"
    with pytest.raises(InvalidInput, match=r"^operations\[0\]\.server_configs\[3\]\.plan: "):
        catalog.validate(workflow(bad))


def test_a_compensation_is_not_checked_against_todays_configuration(catalog: Catalog) -> None:
    undo = TaskSpec("undo t", "upcloud", "server.create", {"plan": "retired"}, compensates="t1")
    catalog.validate(workflow(undo))


def test_policy_items_come_from_the_declarations(catalog: Catalog) -> None:
    spec = workflow(
        TaskSpec("a", "upcloud", "server.create", {"name": "web-01"}),
        TaskSpec("b", "upcloud", "taskserv.delete", {"name": "k8s", "server": "web-01"}),
        TaskSpec("c", "upcloud", "noop"),
        TaskSpec("d", "local", "run", {"command": "true"}),
    )
    assert catalog.items(spec) == [
        ("create", "servers:web-01"),
        ("delete", "taskservs:k8s@web-01"),
        ("run", "local:local"),
    ]
    assert catalog.host_items(spec) == [("run", "local:local")]


def test_lookup_is_exact_and_doing_lists_who_declares_it(catalog: Catalog) -> None:
    assert catalog.lookup("upcloud", "server", "read").operation.mutates is False
    with pytest.raises(NotFound, match="has no operation server/resize"):
        catalog.lookup("upcloud", "server", "resize")
    assert catalog.doing("command", "run") == ["local"]
    assert catalog.doing("server", "create") == ["upcloud"]


class Params(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    inner: Params | None = None


def test_msgspec_errors_become_paths() -> None:
    operation = Operation("create", Params)
    cases = [
        ({}, "name", "required"),
        ({"name": 1}, "name", "Expected `str`, got `int`"),
        ({"name": "a", "x": 1}, "x", "unknown field"),
        ({"name": "a", "inner": {"name": "b", "y": 2}}, "inner.y", "unknown field"),
        ({"name": "a", "inner": {}}, "inner.name", "required"),
    ]
    for params, path, message in cases:
        with pytest.raises(InvalidParams) as caught:
            convert_params(operation, params)
        assert (caught.value.path, caught.value.message) == (path, message)


@pytest.mark.parametrize(
    ("kinds", "why"),
    [
        ((Kind("a", "as", (Operation("x", Params, undo="y"),)),), "its undo 'y'"),
        (
            (Kind("a", "as", (Operation("x", Params), Operation("y", Params, action="a.x"))),),
            "twice",
        ),
        (
            (
                Kind("a", "as", (Operation("x", Params, stands_in=True),)),
                Kind("b", "bs", (Operation("x", Params, stands_in=True),)),
            ),
            "at most one",
        ),
    ],
)
def test_contradictory_declarations_are_refused(kinds: tuple[Kind, ...], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_kinds(kinds)

    class Broken(FreeForm):
        pass

    Broken.kinds = kinds  # type: ignore[attr-defined]
    with pytest.raises(ProviderConfigError, match="provider type 'broken'"):
        Catalog({"b": Broken("b", {})}, {"b": "broken"})


def test_a_scoped_kind_names_its_items_alike_for_policies_and_the_inventory(
    catalog: Catalog,
) -> None:
    spec = workflow(TaskSpec("t", "upcloud", "taskserv.create", {"name": "k8s", "server": "db"}))
    (item,) = catalog.items(spec)
    taskserv = next(k for k in catalog.kinds("upcloud") if k.name == "taskserv")
    assert item == ("create", f"taskservs:{taskserv.item_name({'name': 'k8s', 'server': 'db'})}")
    assert item == ("create", "taskservs:k8s@db")
    assert taskserv.item_name({"name": "k8s"}) == "k8s"
