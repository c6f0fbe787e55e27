"""`provisioning deployment …`: app deployments (seed 002) from the command line, through
the client's deployments section (`orchestrator.deployments_client`). A deployment is
named by its id or its `app_name`. Changes print the workflow id, or with `--wait`
follow it until it ends as `workflow wait` does.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.table import Table

from orchestrator.cli.common import (
    Options,
    confirm,
    json_option,
    pass_options,
    print_json,
    stdout,
)
from orchestrator.cli.workflows import submitted
from orchestrator.deployments_client import Deployments


def _env(values: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for raw in values:
        key, equals, value = raw.partition("=")
        if not equals or not key:
            raise click.BadParameter(f"{raw!r}: give NAME=value")
        env[key] = value
    return env


def _changed(options: Options, answer: dict[str, Any], wait: bool) -> None:
    if options.json and not wait:
        print_json(answer)
        return
    workflow_id = answer.get("workflow_id")
    if not workflow_id:
        click.echo(answer.get("message", "nothing to do"))
        return
    with options.client() as client:
        submitted(options, client, workflow_id, wait)


wait_option = click.option("--wait", is_flag=True, help="Follow the workflow until it ends.")


@click.group("deployment")
def deployment() -> None:
    """App deployments: N replica containers of an image (docs/deployments.md)."""


@deployment.command("create")
@click.argument("app_name")
@click.option("--image", required=True, help="The image, e.g. registry:5000/app:1.0.")
@click.option("--port", type=int, required=True, help="The port the app listens on.")
@click.option("--replicas", type=int, default=1, show_default=True)
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="An env var (repeat).")
@click.option("--health-path", default="/", show_default=True)
@click.option("--registry-user", help="Registry username (the password from $REGISTRY_PASSWORD).")
@wait_option
@json_option
@pass_options
def create(
    options: Options,
    app_name: str,
    image: str,
    port: int,
    replicas: int,
    env: tuple[str, ...],
    health_path: str,
    registry_user: str | None,
    wait: bool,
) -> None:
    """Deploy APP_NAME."""
    body: dict[str, Any] = {
        "app_name": app_name,
        "image": image,
        "port": port,
        "replicas": replicas,
        "env_vars": _env(env),
        "health_check": {"path": health_path},
    }
    if registry_user:
        password = os.environ.get("REGISTRY_PASSWORD") or click.prompt(
            "registry password", hide_input=True
        )
        body["registry_auth"] = {"username": registry_user, "password": password}
    with options.client() as client:
        answer = Deployments(client).create(body)
    if not options.json:
        click.echo(f"deployment {answer['id']} ({app_name}) {answer['status']}")
    _changed(options, answer, wait)


@deployment.command("list")
@click.option(
    "--status", type=click.Choice(["pending", "running", "stopped", "failed", "updating"])
)
@click.option("--page", type=int, default=1, show_default=True)
@json_option
@pass_options
def list_deployments(options: Options, status: str | None, page: int) -> None:
    """List deployments (yours; every one for an administrator)."""
    with options.client() as client:
        listing = Deployments(client).list(status=status, page=page, limit=100)
    if options.json:
        print_json(listing)
        return
    table = Table(box=None, header_style="bold")
    for column in ("id", "app", "status", "replicas", "image", "url"):
        table.add_column(column)
    for item in listing["deployments"]:
        table.add_row(
            item["id"],
            item["app_name"],
            item["status"],
            str(item["replicas"]),
            item["image"],
            item["url"] or "-",
        )
    stdout.print(table)


@deployment.command("get")
@click.argument("deployment_ref")
@json_option
@pass_options
def get(options: Options, deployment_ref: str) -> None:
    """A deployment and its status (by id or app name)."""
    with options.client() as client:
        section = Deployments(client)
        record = section.find(deployment_ref)
        state = section.status(record["id"])
    if options.json:
        print_json({**record, "live": state})
        return
    replicas = state["replicas"]
    for key in ("id", "app_name", "image", "status", "url", "port", "error_message"):
        stdout.print(f"{key:<14} {record.get(key)}")
    stdout.print(
        f"{'replicas':<14} {replicas['ready']}/{replicas['desired']} ready, "
        f"{replicas['available']} running ({state['health']})"
    )


def _each(name: str, doc: str) -> None:
    @deployment.command(name, help=doc)
    @click.argument("deployment_ref")
    @wait_option
    @click.option(
        "--yes", "-y", is_flag=True, hidden=name != "delete", help="Do it without asking."
    )
    @json_option
    @pass_options
    def command(options: Options, deployment_ref: str, wait: bool, yes: bool) -> None:
        if name == "delete":
            confirm(yes, f"delete deployment {deployment_ref} and every replica?")
        with options.client() as client:
            section = Deployments(client)
            ident = section.find(deployment_ref)["id"]
            answer = getattr(section, name)(ident)
        _changed(options, answer, wait)


_each("stop", "Stop every replica.")
_each("start", "Start every replica.")
_each("delete", "Remove every replica, then the deployment.")


@deployment.command("scale")
@click.argument("deployment_ref")
@click.argument("replicas", type=int)
@wait_option
@json_option
@pass_options
def scale(options: Options, deployment_ref: str, replicas: int, wait: bool) -> None:
    """Set the number of replicas."""
    with options.client() as client:
        section = Deployments(client)
        answer = section.scale(section.find(deployment_ref)["id"], replicas)
    _changed(options, answer, wait)


@deployment.command("update")
@click.argument("deployment_ref")
@click.option("--image")
@click.option("--replicas", type=int)
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE")
@wait_option
@json_option
@pass_options
def update(
    options: Options,
    deployment_ref: str,
    image: str | None,
    replicas: int | None,
    env: tuple[str, ...],
    wait: bool,
) -> None:
    """A rolling update: each new replica healthy before an old one goes."""
    changes: dict[str, Any] = {"image": image, "replicas": replicas}
    if env:
        changes["env_vars"] = _env(env)
    with options.client() as client:
        section = Deployments(client)
        answer = section.update(
            section.find(deployment_ref)["id"],
            {k: v for k, v in changes.items() if v is not None},
        )
    _changed(options, answer, wait)


@deployment.command("logs")
@click.argument("deployment_ref")
@click.option("--tail", type=int, default=100, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Then each new line as written (Ctrl-C stops).")
@json_option
@pass_options
def logs(options: Options, deployment_ref: str, tail: int, follow: bool) -> None:
    """The replicas' log lines, oldest first; with --follow, streamed as they come."""
    with options.client() as client:
        section = Deployments(client)
        ident = section.find(deployment_ref)["id"]
        lines = section.follow_logs(ident, tail) if follow else section.logs(ident, tail)["logs"]
        try:
            for line in lines:
                if options.json:
                    click.echo(json.dumps(line))
                else:
                    click.echo(f"{line['timestamp']} {line['source']} {line['message']}")
        except KeyboardInterrupt:
            return


@deployment.group("domains")
def domains() -> None:
    """A deployment's custom domains (host names, unique across deployments)."""


@domains.command("list")
@click.argument("deployment_ref")
@json_option
@pass_options
def list_domains(options: Options, deployment_ref: str) -> None:
    """The deployment's domains."""
    with options.client() as client:
        section = Deployments(client)
        found = section.domains(section.find(deployment_ref)["id"])
    if options.json:
        print_json(found)
        return
    for entry in found:
        click.echo(f"{entry['domain']}  {entry['id']}  {entry['created_at']}")


@domains.command("add")
@click.argument("deployment_ref")
@click.argument("domain")
@json_option
@pass_options
def add_domain(options: Options, deployment_ref: str, domain: str) -> None:
    """Map DOMAIN to the deployment."""
    with options.client() as client:
        section = Deployments(client)
        answer = section.add_domain(section.find(deployment_ref)["id"], domain)
    if options.json:
        print_json(answer)
        return
    click.echo(f"added {answer['domain']} ({answer['id']})")


@domains.command("remove")
@click.argument("deployment_ref")
@click.argument("domain")
@json_option
@pass_options
def remove_domain(options: Options, deployment_ref: str, domain: str) -> None:
    """Remove DOMAIN (a domain or its id) from the deployment."""
    with options.client() as client:
        section = Deployments(client)
        answer = section.remove_domain(section.find(deployment_ref)["id"], domain)
    if options.json:
        print_json(answer)
        return
    click.echo(f"removed {answer['domain']}")


@deployment.command("metrics")
@click.argument("deployment_ref")
@json_option
@pass_options
def metrics(options: Options, deployment_ref: str) -> None:
    """CPU, memory, network and restarts per replica, from the engine."""
    with options.client() as client:
        section = Deployments(client)
        found = section.metrics(section.find(deployment_ref)["id"])
    if options.json:
        print_json(found)
        return
    table = Table(box=None, header_style="bold")
    for column in ("replica", "running", "cpu %", "memory", "rx", "tx", "restarts"):
        table.add_column(column)
    for replica in found["replicas"]:
        table.add_row(
            replica["name"],
            "yes" if replica["running"] else "no",
            f"{replica['cpu_percent']:.1f}",
            f"{replica['memory_bytes'] / 2**20:.1f} MiB",
            str(replica["network"]["rx_bytes"]),
            str(replica["network"]["tx_bytes"]),
            str(replica["restarts"]),
        )
    stdout.print(table)
