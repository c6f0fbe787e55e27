"""How records look in a terminal: list tables and detail views."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.client import Page, Task, Workflow
from orchestrator.clock import format_duration
from orchestrator.progress import STATUS_STYLES

_ERROR_CHARS = 80


def short_id(value: str, wide: bool = False) -> str:
    """The random tail of a time-ordered id: its head is shared by ids made together."""
    return value if wide else value[-12:]


def status_text(status: str) -> Text:
    return Text(status, STATUS_STYLES.get(status, ""))


def when(at: datetime | None) -> str:
    """Local time; the date too unless it is today."""
    if at is None:
        return "-"
    local = at.astimezone()
    today = datetime.now(UTC).astimezone().date()
    return local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M")


def duration(started: datetime | None, completed: datetime | None) -> str:
    if started is None:
        return "-"
    return format_duration(((completed or datetime.now(UTC)) - started).total_seconds())


def _clip(text: str | None) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= _ERROR_CHARS else flat[: _ERROR_CHARS - 1] + "…"


def task_table(tasks: list[Task], *, wide: bool = False) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "status", "attempts", "started", "duration", "error"):
        table.add_column(column, no_wrap=column not in ("name", "error"))
    for t in tasks:
        table.add_row(
            short_id(t.id, wide),
            t.name,
            status_text(t.status),
            f"{t.attempts}/{t.max_attempts}",
            when(t.started_at),
            duration(t.started_at, t.completed_at),
            Text(_clip(t.error), "red"),
        )
    return table


def workflow_table(workflows: list[Workflow], *, wide: bool = False) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("id", "kind", "name", "status", "tasks", "created", "duration", "error"):
        table.add_column(column, no_wrap=column not in ("name", "error"))
    for w in workflows:
        table.add_row(
            short_id(w.id, wide),
            w.kind,
            w.name,
            status_text(w.status),
            f"{w.finished_tasks}/{w.total_tasks}",
            when(w.created_at),
            duration(w.started_at, w.completed_at),
            Text(_clip(w.error), "red"),
        )
    return table


def page_note(page: Page[Any], noun: str) -> str:
    """`3 of 120 tasks (1-3); next: --offset 3`."""
    if not page.items:
        return f"no {noun}" + (f" at offset {page.offset}" if page.total else "")
    first, last = page.offset + 1, page.offset + len(page.items)
    note = f"{len(page.items)} of {page.total} {noun} ({first}-{last})"
    return note + (f"; next: --offset {last}" if page.next else "")


def detail(record: msgspec.Struct, *, skip: tuple[str, ...] = ()) -> RenderableType:
    """Every field of a record but `skip`, one per row; nested values as compact JSON."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for name, value in msgspec.structs.asdict(record).items():
        if name not in skip:
            grid.add_row(name, _value(name, value))
    return grid


def _value(name: str, value: Any) -> RenderableType:
    if value is None:
        return Text("-", "dim")
    if name == "status":
        return status_text(value)
    if isinstance(value, datetime):
        return value.astimezone().isoformat(timespec="milliseconds")
    if isinstance(value, dict | list):
        return msgspec.json.encode(value).decode()
    return str(value)


def plain_table(*columns: str) -> Table:
    """A borderless table with these columns; the long free-text ones wrap."""
    table = Table(box=None, header_style="bold")
    for column in columns:
        wraps = column in ("description", "resource", "email", "condition")
        table.add_column(column, no_wrap=not wraps)
    return table


def yes_no(value: bool) -> Text:
    return Text("yes", "green") if value else Text("no", "dim")


def iso(at: datetime) -> str:
    """UTC, to the second: `2025-09-26T10:00:00Z`."""
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
