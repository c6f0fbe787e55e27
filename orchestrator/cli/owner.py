"""What the machine's owner does with local access to the database, not through the API:
`audit verify` and `policies restore-defaults` (their groups, in `cli/audit.py` and
`cli/policies.py`, add them).

These commands open the configured database themselves (`--config`,
`PROVISIONING_DATA_DIR`, `PROVISIONING_DATABASE_URL`) with the secrets key of that
configuration (`auth.secrets_key`, else `<data_dir>/secrets.key`, never created here),
need no login, and work while the control center refuses everyone: reading the
database and the key is the credential.
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

from orchestrator.cli.common import (
    Failure,
    Options,
    json_option,
    pass_options,
    print_json,
    shown_database,
)
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from control_center.audit import ChainCheck
    from orchestrator.store.engine import AsyncEngine

R = TypeVar("R")


def _on_database(settings: Settings, what: str, work: Callable[[AsyncEngine], Awaitable[R]]) -> R:
    """Run `work` on the configured database, which must exist; errors become one line."""
    if settings.is_sqlite:
        database = Path(settings.resolved_database_url.split("///", 1)[-1])
        if not database.is_file():
            raise Failure(f"no database at {database} (see --config, PROVISIONING_DATA_DIR)")
    from orchestrator.store.engine import DatabaseError, create_engine

    async def run() -> R:
        engine = create_engine(settings)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DatabaseError as exc:
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


@click.command("restore-defaults")
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

    from control_center.secret_keys import keys_for

    keys = keys_for(settings, create=False)

    async def restore(engine: AsyncEngine) -> RestoreReport:
        from control_center.audit import record_audit
        from control_center.policy_set import restore_default_policies

        restored = await restore_default_policies(engine)
        await record_audit(
            engine,
            key=keys.audit,
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


def _head(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise click.BadParameter("give the head as SEQ:HASH, as `audit verify` prints it")
    return int(seq), digest.lower()


@click.command("verify")
@click.option(
    "--expect-head",
    metavar="SEQ:HASH",
    help="A chain head printed by an earlier verify and kept outside the database: the "
    "record at SEQ must still be there with HASH.",
)
@json_option
@pass_options
def audit_verify(options: Options, expect_head: str | None) -> None:
    """Check the audit log's keyed hash chain in the configured database; exit 1 if broken.

    Prints the chain head (SEQ:HASH): keep it somewhere the database's writers cannot
    reach, and pass it back with --expect-head to notice records removed from the end.
    """
    expected = _head(expect_head) if expect_head else None
    settings = options.settings()
    from control_center.audit import verify_chain
    from control_center.secret_keys import keys_for

    key = keys_for(settings, create=False).audit
    check: ChainCheck = _on_database(
        settings, "read the audit log", lambda engine: verify_chain(engine, key, expected)
    )
    if options.json:
        print_json(check)
    err = options.json  # with --json, the sentences go to stderr
    if not check.verified:
        where = (
            "the chain head"
            if check.broken_seq is None
            else f"record {check.broken_at} (seq {check.broken_seq})"
        )
        click.echo(f"audit chain broken at {where}: {check.reason}", err=err)
        sys.exit(1)
    unkeyed = ""
    if check.unkeyed:
        unkeyed = (
            f", {check.unkeyed} of them written before the chain was keyed "
            f"(before seq {check.keyed_from}): checked without the key"
        )
    click.echo(f"audit chain verified: {check.records} records{unkeyed}", err=err)
    head = "none" if check.head_seq is None else f"{check.head_seq}:{check.head_hash}"
    click.echo(f"head {head}", err=err)
    if expected is not None:
        click.echo(f"the head recorded elsewhere (seq {expected[0]}) matches", err=err)
