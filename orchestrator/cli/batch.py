"""`provisioning batch`: submit batch documents, list, show, cancel and follow batches.

A batch file is YAML, or JSON when its name ends in `.json`; `-` reads YAML from stdin.
A submission without `--wait` prints only the batch id on stdout, for scripts. With
`--wait`, and in `batch wait`, the batch is followed until it ends (see
`orchestrator.progress.watch_batch`): exit 0 when it Completed, 1 when it Failed, was
Cancelled or was RolledBack (it failed and its work was undone), with the failed tasks'
errors on stderr; 130 on Ctrl-C, which stops watching, not the work. With `--json` the
progress lines go to stderr and the final batch, as JSON, to stdout.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import NoReturn

import click
import msgspec
import msgspec.yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.cli.common import (
    Failure,
    Options,
    json_option,
    pass_options,
    print_json,
    stdout,
)
from orchestrator.cli.ids import BATCH_ID
from orchestrator.cli.tables import page_note, short_id, status_text, when
from orchestrator.cli.workflows import show_plan
from orchestrator.client import ApiError, Batch, OrchestratorClient
from orchestrator.progress import BatchOutcome, watch_batch

_JSON_SUFFIXES = (".json",)
_CELL_CHARS = 80


@click.group()
def batch() -> None:
    """Batches: operations on servers, taskservs, clusters and commands, with dependencies."""


@batch.command("submit")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--wait", is_flag=True, help="Follow the batch until it ends.")
@click.option("--check", is_flag=True, help="Check mode: print the plan, change nothing.")
@json_option
@pass_options
def submit_batch(options: Options, file: str, wait: bool, check: bool) -> None:
    """Submit the batch in FILE (YAML, or JSON if it ends in .json; - for stdin)."""
    document, content_type = _read(file)
    if check:
        document, content_type = _checking(document, content_type, file)
    with options.client() as client:
        try:
            submitted = client.submit_batch(document, content_type)
        except ApiError as exc:
            if exc.status in (400, 413, 415, 422):
                source = "stdin" if file == "-" else file
                raise Failure(f"{source}: {exc.message} ({exc.code})") from exc
            raise
        if check and not wait:
            ended = _ended(client, submitted.batch_id)
            sys.exit(show_plan(options, client.workflow_plan(ended)))
        if not wait:
            if options.json:
                print_json(submitted)
            else:
                click.echo(submitted.batch_id)
            return
        click.echo(f"batch {submitted.batch_id} submitted", err=options.json)
        _follow(client, submitted.batch_id, options.json, check=check)


def _checking(document: bytes, content_type: str, file: str) -> tuple[bytes, str]:
    """The document with `check_mode: true`, as JSON."""
    try:
        decoded = (
            msgspec.json.decode(document)
            if content_type == "application/json"
            else msgspec.yaml.decode(document)
        )
    except (msgspec.DecodeError, ValueError) as exc:
        source = "stdin" if file == "-" else file
        raise Failure(f"{source}: not a batch document ({exc}) (INVALID_INPUT)") from exc
    if not isinstance(decoded, dict):
        raise Failure(f"{file}: a batch document is a mapping (INVALID_INPUT)")
    return msgspec.json.encode({**decoded, "check_mode": True}), "application/json"


def _ended(client: OrchestratorClient, batch_id: str) -> str:
    """Wait quietly for a (check-mode) batch to end; its id."""
    while not client.get_workflow(batch_id).is_final:
        time.sleep(0.1)
    return batch_id


@batch.command("list")
@click.option("--status", help="Pending, Running, Completed, Failed, Cancelled, RolledBack, …")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--wide", is_flag=True, help="Show whole ids.")
@json_option
@pass_options
def list_batches(options: Options, status: str | None, limit: int, offset: int, wide: bool) -> None:
    """List batches, newest first."""
    with options.client() as client:
        page = client.list_batches(status=status, limit=limit, offset=offset)
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(batch_table(page.items, wide=wide))
    click.echo(page_note(page, "batches"))


@batch.command("show")
@click.argument("batch_id", metavar="ID", type=BATCH_ID)
@json_option
@pass_options
def show_batch(options: Options, batch_id: str) -> None:
    """Show a batch: its operations and what each of their tasks did."""
    with options.client() as client:
        found = client.get_batch(batch_id)
    if options.json:
        print_json(found)
        return
    stdout.print(batch_detail(found))
    click.echo()
    stdout.print(operations_table(found))


@batch.command("cancel")
@click.argument("batch_id", metavar="ID", type=BATCH_ID)
@json_option
@pass_options
def cancel_batch(options: Options, batch_id: str) -> None:
    """Cancel a batch: pending tasks never start, running ones are stopped."""
    with options.client() as client:
        message = client.cancel_batch(batch_id)
    if options.json:
        print_json({"batch_id": batch_id, "message": message})
    else:
        click.echo(message)


@batch.command("wait")
@click.argument("batch_id", metavar="ID", type=BATCH_ID)
@json_option
@pass_options
def wait_batch(options: Options, batch_id: str) -> None:
    """Follow a batch until it ends; exit 0 if it Completed, else 1."""
    with options.client() as client:
        _follow(client, batch_id, options.json)


def _read(file: str) -> tuple[bytes, str]:
    """The document and its media type: JSON by the `.json` suffix, else YAML."""
    if file == "-":
        return sys.stdin.buffer.read(), "application/yaml"
    path = Path(file)
    try:
        document = path.read_bytes()
    except OSError as exc:
        raise Failure(f"cannot read {file}: {exc.strerror or exc}") from exc
    json_file = path.suffix.lower() in _JSON_SUFFIXES
    return document, "application/json" if json_file else "application/yaml"


def _follow(
    client: OrchestratorClient, batch_id: str, as_json: bool, *, check: bool = False
) -> NoReturn:
    # With --json, stdout carries only the final batch; the progress lines go to stderr.
    console = Console(stderr=True, highlight=False) if as_json else stdout
    try:
        outcome = watch_batch(
            client, batch_id, console=console, out=sys.stderr if as_json else None
        )
    except KeyboardInterrupt:
        click.echo(
            f"\nstopped watching; batch {batch_id} keeps running. "
            f"To cancel it: provisioning batch cancel {batch_id}",
            err=True,
        )
        sys.exit(130)
    if as_json and not check:
        print_json(outcome.batch)
    _report(outcome, as_json)
    code = 0 if outcome.succeeded else 1
    if check:
        options = click.get_current_context().find_object(Options)
        assert options is not None
        code = max(code, show_plan(options, client.workflow_plan(batch_id)))
    sys.exit(code)


def _report(outcome: BatchOutcome, as_json: bool) -> None:
    ended = outcome.batch
    operations = f"{_count(ended, 'Completed')}/{len(ended.operations)} operations completed"
    if outcome.succeeded:
        click.echo(f"batch {ended.batch_id} Completed: {operations}", err=as_json)
        return
    if outcome.rolled_back:
        undone = _count(ended, "RolledBack")
        summary = (
            f"batch {ended.batch_id} failed and was rolled back: "
            f"{undone}/{len(ended.operations)} operations rolled back"
        )
    else:
        summary = f"batch {ended.batch_id} {ended.status}: {operations}"
    failures = outcome.failures
    reason = f": {ended.error}" if ended.error and not failures else ""
    click.echo(f"error: {summary}{reason}", err=True)
    for failure in failures:
        result = failure.result
        if failure.undo_failed and result.compensation is not None:
            undo = result.compensation
            click.echo(
                f"  undo of {failure.operation}/{failure.subject} ({undo.task_id}) "
                f"{undo.status}: {undo.error}",
                err=True,
            )
        else:
            click.echo(
                f"  {failure.operation}/{failure.subject} ({result.task_id}): {result.error}",
                err=True,
            )


def _count(found: Batch, status: str) -> int:
    return sum(1 for op in found.operations if op.status == status)


# -- how batches look -----------------------------------------------------------------------


def batch_table(batches: list[Batch], *, wide: bool = False) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "status", "operations", "created", "error"):
        table.add_column(column, no_wrap=column not in ("name", "operations", "error"))
    for b in batches:
        counts = Counter(op.status for op in b.operations)
        ops = ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
        table.add_row(
            short_id(b.batch_id, wide),
            b.name or "-",
            status_text(b.status),
            f"{b.finished_operations}/{len(b.operations)}: {ops}",
            when(b.created_at),
            Text(_clip(b.error), "red"),
        )
    return table


def batch_detail(found: Batch) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("batch_id", found.batch_id)
    grid.add_row("name", found.name or "-")
    grid.add_row("status", status_text(found.status))
    created = found.created_at
    grid.add_row(
        "created_at", created.astimezone().isoformat(timespec="milliseconds") if created else "-"
    )
    grid.add_row("operations", f"{found.finished_operations}/{len(found.operations)} ended")
    grid.add_row("error", Text(found.error, "red") if found.error else Text("-", "dim"))
    return grid


def operations_table(found: Batch) -> Table:
    """A row per task, grouped by operation: its status, its undo, its output or error."""
    table = Table(box=None, header_style="bold")
    for column in ("operation", "status", "progress", "task", "task status", "undo", "outcome"):
        table.add_column(column, no_wrap=column in ("status", "progress", "task status"))
    for op in found.operations:
        results = list((op.results or {}).items())
        if not results:
            table.add_row(op.id, status_text(op.status), f"{op.progress:.0f}%", "-", "", "", "")
            continue
        for index, (subject, result) in enumerate(results):
            first = index == 0
            undo = result.compensation
            outcome = (
                Text(_clip(result.error), "red") if result.error else Text(_clip(result.output), "")
            )
            if undo is not None and undo.error:
                outcome.append(f"  undo: {_clip(undo.error)}", "red")
            table.add_row(
                op.id if first else "",
                status_text(op.status) if first else "",
                f"{op.progress:.0f}%" if first else "",
                subject,
                status_text(result.status),
                status_text(undo.status) if undo else Text("-", "dim"),
                outcome,
            )
    return table


def _clip(text: str | None) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= _CELL_CHARS else flat[: _CELL_CHARS - 1] + "…"
