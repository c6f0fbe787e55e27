"""What the machine's owner does with local access to the database, not through the API:
`policies restore-defaults`.

These commands open the configured database themselves (`--config`,
`PROVISIONING_DATA_DIR`, `PROVISIONING_DATABASE_URL`), need no login, and work while
the control center refuses everyone: reading the database and its key files is the
credential.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click
import msgspec

from orchestrator.cli.accounts import policies
from orchestrator.cli.app import (
    Failure,
    Options,
    json_option,
    pass_options,
    print_json,
    shown_database,
)
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

R = TypeVar("R")


def _on_database(settings: Settings, what: str, work: Callable[[AsyncEngine], Awaitable[R]]) -> R:
    """Run `work` on the configured database, which must exist; errors become one line."""
    if settings.is_sqlite:
        database = Path(settings.resolved_database_url.split("///", 1)[-1])
        if not database.is_file():
            raise Failure(f"no database at {database} (see --config, PROVISIONING_DATA_DIR)")
    from sqlalchemy.exc import SQLAlchemyError

    from orchestrator.store.engine import create_engine

    async def run() -> R:
        engine = create_engine(settings)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise Failure(f"cannot {what} in {shown_database(settings)}: {reason}") from exc


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor the user database
        return ""


class RestoreReport(msgspec.Struct, kw_only=True):
    """What `policies restore-defaults` did."""

    changes: list[str]
    administrators_can_manage: bool
    problem: str | None = None


@policies.command("restore-defaults")
@json_option
@pass_options
def restore_defaults(options: Options) -> None:
    """Re-create and re-enable the default policies in the configured database.

    The way back when no administrator may manage policies any more: it works on the
    database directly, without the API. Missing default policies are created, disabled
    ones enabled, edited ones reset to their default rules; then any policy whose Deny
    still keeps every enabled administrator from managing policies is disabled. Every
    change is printed and recorded in the audit log.
    """
    settings = options.settings()

    async def restore(engine: AsyncEngine) -> RestoreReport:
        from control_center.audit import record_audit
        from control_center.policy_store import restore_default_policies

        restored = await restore_default_policies(engine)
        await record_audit(
            engine,
            action="policies.restore_defaults",
            resource="policies:*",
            result="success",
            details={"app": "cli", "os_user": _os_user(), "changes": restored.changes},
        )
        return RestoreReport(
            changes=restored.changes,
            administrators_can_manage=restored.problem is None,
            problem=restored.problem,
        )

    report = _on_database(settings, "restore the default policies", restore)
    if options.json:
        print_json(report)
    else:
        for change in report.changes:
            click.echo(change)
        if report.problem is None:
            click.echo(
                "the administrators can manage policies again"
                if report.changes
                else "the default policies are in place"
            )
    if report.problem is not None:
        click.echo(
            f"error: the administrators still cannot manage policies: {report.problem}", err=True
        )
        sys.exit(1)
