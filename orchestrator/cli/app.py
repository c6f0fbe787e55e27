"""The root command group: its global options, how errors reach the user, and every
command, gathered from the modules that define them."""

from __future__ import annotations

from typing import Any

import click

from orchestrator.cc_client import ControlCenterUnreachable, CredentialsError, SessionExpired
from orchestrator.cli import (
    api_keys,
    audit,
    batch,
    completion,
    contexts,
    db,
    deployments,
    destroy,
    host,
    kubernetes,
    login,
    policies,
    profile,
    resources,
    rollback,
    serve,
    tasks,
    users,
    vms,
    worker,
    workflows,
)
from orchestrator.cli.common import FORMATS, Failure, Options
from orchestrator.cli.errors import message_of
from orchestrator.client import ApiError, Unreachable
from orchestrator.settings import ConfigError


class _Group(click.Group):
    """Turns the errors any command may meet into one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise Failure(message_of(exc)) from exc
        except ControlCenterUnreachable as exc:
            raise Failure(
                f"cannot reach the control center at {exc.url}; is it running? "
                "(python -m control_center)"
            ) from exc
        except Unreachable as exc:
            raise Failure(
                f"cannot reach the orchestrator at {exc.url}; is it running? (provisioning serve)"
            ) from exc
        except (ConfigError, CredentialsError, SessionExpired) as exc:
            raise Failure(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option(
    "--url", envvar="PROVISIONING_URL", help="Orchestrator base URL [env: PROVISIONING_URL]."
)
@click.option(
    "--token", envvar="PROVISIONING_TOKEN", help="API bearer token [env: PROVISIONING_TOKEN]."
)
@click.option(
    "--context",
    envvar="PROVISIONING_CONTEXT",
    metavar="NAME",
    help="Use this context's URLs and session [env: PROVISIONING_CONTEXT].",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (= -o json).")
@click.option("-o", "--output", type=click.Choice(FORMATS), help="table, wide, json or yaml.")
@click.version_option(package_name="provisioning")
@click.pass_context
def cli(
    ctx: click.Context,
    config: str | None,
    url: str | None,
    token: str | None,
    context: str | None,
    as_json: bool,
    output: str | None,
) -> None:
    """provisioning: a workflow orchestrator for infrastructure."""
    chosen = output or ("json" if as_json else "table")
    ctx.obj = Options(
        config=config,
        url=url,
        token=token,
        json=chosen in ("json", "yaml"),
        output=chosen,
        context=context,
    )


for command in (
    # The orchestrator: its service, its database, and what runs on it.
    serve.serve,
    worker.worker,
    db.db,
    workflows.workflow,
    # `servers create|delete` as `workflow servers …`, and deleting an infra.
    workflows.servers,
    destroy.destroy,
    tasks.tasks,
    batch.batch,
    resources.list_providers,
    resources.apply,
    resources.resources,
    rollback.checkpoint,
    rollback.rollback,
    rollback.restore,
    rollback.state,
    host.host,
    vms.vm,
    deployments.deployment,
    kubernetes.kubernetes,
    # The control center: your session and account, and its administration.
    login.login,
    login.logout,
    profile.mfa,
    profile.password,
    users.users,
    policies.policies,
    api_keys.api_keys,
    audit.audit,
    # The CLI itself: installations, the shell.
    contexts.context,
    completion.completion,
):
    cli.add_command(command)
