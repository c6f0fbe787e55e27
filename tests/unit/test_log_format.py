"""One log format for both apps (`orchestrator/running.py`): JSON lines when stderr is not
a terminal, readable console lines on a terminal, for structlog's records and the
standard library's (uvicorn's) alike. The apps' own output is checked end to end in
tests/e2e/test_serve_whole.py."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest
import structlog

from orchestrator.running import configure_logging
from orchestrator.settings import ServerSettings, Settings

pytestmark = pytest.mark.backend_independent


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    structlog.reset_defaults()


def logged(stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch, log_format: str) -> list[str]:
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging(Settings(server=ServerSettings(log_format=log_format)), logging.INFO)
    structlog.get_logger("orchestrator.test").info("task started", task="t1")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    return stderr.getvalue().splitlines()


def plain(line: str) -> str:
    """Without the terminal's colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", line)


def test_auto_writes_json_lines_when_stderr_is_not_a_terminal(monkeypatch):
    ours, uvicorns = (json.loads(line) for line in logged(io.StringIO(), monkeypatch, "auto"))
    assert ours["event"] == "task started"
    assert ours["task"] == "t1"
    assert ours["logger"] == "orchestrator.test"
    assert uvicorns["event"] == "Started server process [42]"
    assert uvicorns["logger"] == "uvicorn.error"
    for record in (ours, uvicorns):
        assert record["level"] == "info"
        assert record["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    ("stderr", "log_format"), [(Terminal(), "auto"), (io.StringIO(), "console")]
)
def test_console_lines_on_a_terminal_or_when_asked(monkeypatch, stderr, log_format):
    ours, uvicorns = (plain(line) for line in logged(stderr, monkeypatch, log_format))
    assert not ours.startswith("{")
    assert "task started" in ours
    assert "task=t1" in ours
    assert "info" in ours
    assert "Started server process [42]" in uvicorns
    assert "uvicorn.error" in uvicorns
