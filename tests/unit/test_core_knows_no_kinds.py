"""The core never learns a resource kind's name: the scheduler, the rules, the task specs,
rollback planning, the executor's calls, the service and the store run any provider's
work alike. Kinds are found by name in one place, `orchestrator/resources.py`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from providers.registry import load_provider_types

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent

ORCHESTRATOR = Path(__file__).resolve().parents[2] / "orchestrator"
CORE = [
    *(
        ORCHESTRATOR / f"{name}.py"
        for name in ("scheduler", "rules", "specs", "attempt", "graph", "service")
    ),
    *sorted((ORCHESTRATOR / "store").glob("*.py")),
]
#: Words of the core's own vocabulary that a kind may share: a task's seed field
#: `command`, running a task, the attempt log's files, a system call, storage (of the
#: store, not the host's disks).
OWN_WORDS = {"command", "commands", "run", "file", "files", "system", "storage"}


def kind_words() -> set[str]:
    """Every kind, plural and action the installed provider types declare."""
    words = set()
    for factory in load_provider_types().values():
        for kind in getattr(factory, "kinds", ()):
            words |= {kind.name, kind.plural}
            words |= {kind.action(op) for op in kind.operations}
    return words - OWN_WORDS


def test_the_installed_types_declare_kinds_to_look_for() -> None:
    assert {"server", "taskservs", "cluster.create", "noop"} <= kind_words()


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ORCHESTRATOR)))
def test_no_kind_is_named_in_the_core(path: Path) -> None:
    text = path.read_text()
    found = sorted(
        word
        for word in kind_words()
        if re.search(rf"(?<![\w.]){re.escape(word)}(?![\w])", text, re.IGNORECASE)
    )
    assert not found, f"{path.name} names resource kinds {found}: ask orchestrator/resources.py"
