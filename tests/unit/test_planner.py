"""The planner (`orchestrator/planner.py`): an infra that names what it does not define is
bad input that says what to fix, for every operation."""

from __future__ import annotations

import pytest

from orchestrator.errors import InvalidInput
from orchestrator.planner import plan_taskserv
from orchestrator.resources import Catalog
from orchestrator.workspace import InfraSettings, ServerDef, TaskservDef
from providers.sim import SimProvider

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


@pytest.fixture
def catalog() -> Catalog:
    return Catalog({"upcloud": SimProvider("upcloud", {})}, {"upcloud": "sim"})


def infra_naming_a_missing_server() -> InfraSettings:
    return InfraSettings(
        servers=[ServerDef(name="web-01", provider="upcloud")],
        taskservs=[TaskservDef(name="k8s", servers=["web-01", "db-09"])],
    )


@pytest.mark.parametrize("operation", ["create", "delete"])
def test_a_taskserv_on_an_undefined_server_is_bad_input(catalog, operation):
    with pytest.raises(InvalidInput) as raised:
        plan_taskserv(catalog, infra_naming_a_missing_server(), operation, "k8s")
    message = str(raised.value)
    assert "'db-09'" in message and "defined: web-01" in message


def test_a_taskserv_delete_removes_it_from_each_of_its_servers(catalog):
    infra = InfraSettings(
        servers=[
            ServerDef(name="web-01", provider="upcloud"),
            ServerDef(name="web-02", provider="upcloud"),
        ],
        taskservs=[TaskservDef(name="k8s")],
    )
    tasks = plan_taskserv(catalog, infra, "delete", "k8s")
    assert [t.name for t in tasks] == [
        "remove taskserv k8s from web-01",
        "remove taskserv k8s from web-02",
    ]
