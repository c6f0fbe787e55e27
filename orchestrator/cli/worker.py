"""`provisioning worker`: an executor without the HTTP API, for PostgreSQL.

It claims ready tasks from the shared database beside any other workers and `serve`
processes, until SIGINT or SIGTERM; then it stops the tasks it was running and hands
them back (the attempt not counted) for the others to run at once, and exits 0. It
serves its own `/metrics` and `/health` (`orchestrator/worker_endpoint.py`, settings
`[worker]`).
"""

from __future__ import annotations

import asyncio
import os
import signal

import click
import uvloop

from orchestrator.cli.common import Failure, Options, pass_options, shown_database
from orchestrator.data_dir import PRIVATE_UMASK
from orchestrator.running import configure_logging, log_level
from orchestrator.settings import Settings


@click.command()
@pass_options
def worker(options: Options) -> None:
    """Run tasks from the shared PostgreSQL database until SIGINT or SIGTERM."""
    settings = options.settings()
    if settings.is_sqlite:
        raise Failure(
            "workers need PostgreSQL: the embedded SQLite database is run by `provisioning "
            "serve` alone (set database_url, then `provisioning db upgrade`)"
        )
    os.umask(PRIVATE_UMASK)  # what it writes in its data directory is its own
    level = log_level(settings)
    configure_logging(settings, level)
    uvloop.run(_run(settings))  # the loop `serve` runs on too
    click.echo("worker stopped")


async def _run(settings: Settings) -> None:
    from orchestrator.service import AlreadyRunning, Orchestrator, freeze_startup_heap
    from orchestrator.store.engine import SchemaNotCurrent
    from orchestrator.worker_endpoint import WorkerEndpoint
    from providers.base import ProviderConfigError

    try:
        orchestrator = Orchestrator(settings, run_tasks=True, background=False)
    except ProviderConfigError as exc:
        raise Failure(str(exc)) from exc
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    try:
        await orchestrator.start()
    except (AlreadyRunning, SchemaNotCurrent) as exc:
        await orchestrator.engine.dispose()
        raise Failure(str(exc)) from exc
    endpoint = WorkerEndpoint(orchestrator)
    address = "off"
    if settings.worker.metrics:
        try:
            address = await endpoint.start()
        except OSError as exc:
            await orchestrator.stop()
            raise Failure(str(exc)) from exc
    freeze_startup_heap()
    banner = [
        ("id", orchestrator.scheduler.worker_id),
        ("database", shown_database(settings)),
        ("workspace", str(settings.workspace)),
        ("providers", ", ".join(sorted(orchestrator.providers)) or "none"),
        (
            "limits",
            f"{settings.executor.worker_limit} here, {settings.executor.global_limit} in all",
        ),
        ("metrics", address),
    ]
    # One write: whoever reads the banner for the metrics address never sees half of it.
    click.echo("\n".join(["provisioning worker", *(f"  {k:<10} {v}" for k, v in banner)]))
    try:
        await stopped.wait()
    finally:
        await endpoint.stop()
        await orchestrator.stop()
