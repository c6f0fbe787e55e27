"""The control center from the command line: `login`, `logout`, `users`, `policies`,
`api-keys` and `audit`.

- `login` asks for the password (hidden; or one line on stdin with `--password-stdin`)
  and saves the session (`orchestrator.cc_client.credentials_path()`, mode 0600). Every
  command then sends its access token when no `--token`/`$PROVISIONING_TOKEN` is given,
  renewing it once through `POST /auth/refresh` when it has expired.
- `logout` ends the session on the control center and deletes the saved login.
- `users`, `policies`, `api-keys` and `audit logs` call the control center at
  `--cc-url`/`$PROVISIONING_CC_URL`, else the saved login's, else the configured
  `control_center.host:port`.
- `audit verify` and `policies restore-defaults` work on the database itself, not
  through the API: they live in `cli/owner.py`.

Passwords are never echoed, logged, printed or saved.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
import yaml
from rich.table import Table
from rich.text import Text

from orchestrator.cc_client import (
    ApiKey,
    AuditRecord,
    ControlCenterClient,
    Credentials,
    CredentialsError,
    Policy,
    SessionExpired,
    User,
    credentials_lock,
    credentials_path,
    delete_credentials,
    fresh_credentials,
    load_credentials,
    save_credentials,
)
from orchestrator.cli.app import (
    Failure,
    Options,
    cli,
    json_option,
    pass_options,
    print_json,
    stdout,
)
from orchestrator.cli.tables import page_note, short_id, when
from orchestrator.client import ApiError, Unreachable
from orchestrator.settings import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

_NOTES = {
    "MFA_REQUIRED": (
        "your role requires MFA: enroll a TOTP device (POST /auth/mfa/enroll, then "
        "POST /auth/mfa/verify) before anything else"
    ),
    "PASSWORD_CHANGE_REQUIRED": (
        "this is a one-time password: change it (PUT /user/password) before anything else"
    ),
}


def cc_url_option(command: F) -> F:
    """`--cc-url URL` (or `$PROVISIONING_CC_URL`): the control center to call."""

    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        options = ctx.find_object(Options)
        if value and options is not None:
            options.cc_url = value

    decorate = click.option(
        "--cc-url",
        envvar="PROVISIONING_CC_URL",
        expose_value=False,
        callback=remember,
        metavar="URL",
        help="Control center base URL [env: PROVISIONING_CC_URL].",
    )
    return decorate(command)


def _read_secret_line(what: str) -> str:
    """One line of stdin, without its line break (for `--password-stdin`)."""
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise click.UsageError(f"--password-stdin: no {what} on stdin")
    return line


# -- login and logout -----------------------------------------------------------------------


@cli.command()
@click.option("--username", "-u", help="Your user name (or email); asked when not given.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (one line).")
@click.option("--mfa-code", metavar="CODE", help="A TOTP code (or a backup code).")
@cc_url_option
@json_option
@pass_options
def login(
    options: Options, username: str | None, password_stdin: bool, mfa_code: str | None
) -> None:
    """Log in to the control center and save the session for later commands."""
    try:
        options.saved_login()
    except CredentialsError as exc:
        click.echo(f"warning: {exc}; logging in replaces it", err=True)
        options.ignore_saved_login()
    cc_url = options.control_center_url()
    if username is None:
        if password_stdin:
            raise click.UsageError("--password-stdin needs --username")
        username = click.prompt("Username", err=True).strip()
    password = (
        _read_secret_line("password")
        if password_stdin
        else click.prompt("Password", hide_input=True, err=True)
    )
    with ControlCenterClient(cc_url) as client:
        try:
            answer = client.login(username, password, mfa_code)
        except ApiError as exc:
            # A failed login does not say which factor was wrong: offer the second one.
            if exc.status != 401 or mfa_code is not None or password_stdin:
                raise
            if not sys.stdin.isatty():
                raise
            mfa_code = click.prompt(
                "Login refused. If your account uses MFA, enter a code (empty to stop)",
                default="",
                show_default=False,
                err=True,
            ).strip()
            if not mfa_code:
                raise
            answer = client.login(username, password, mfa_code)
    saved = Credentials(
        token=answer.token,
        refresh_token=answer.refresh_token,
        expires_at=answer.expires_at,
        refresh_expires_at=answer.refresh_expires_at,
        cc_url=cc_url,
        url=_orchestrator_url(options),
        username=answer.user.username,
        user_id=answer.user.id,
    )
    path = credentials_path()
    with credentials_lock(path):
        save_credentials(saved, path)
    if options.json:
        print_json(
            {
                "user": answer.user,
                "expires_at": answer.expires_at,
                "refresh_expires_at": answer.refresh_expires_at,
                "restrictions": answer.restrictions,
                "cc_url": cc_url,
                "url": saved.url,
                "credentials": str(path),
            }
        )
    else:
        roles = ", ".join(answer.user.roles) or "no roles"
        click.echo(f"logged in to {cc_url} as {answer.user.username} ({roles})")
        click.echo(f"session saved in {path}; the token expires at {_iso(answer.expires_at)}")
    for restriction in answer.restrictions:
        click.echo(f"note: {_NOTES.get(restriction, restriction)}", err=True)


def _orchestrator_url(options: Options) -> str:
    """The orchestrator address to remember; empty when the configuration is unusable."""
    try:
        return options.base_url()
    except ConfigError:
        return ""


@cli.command()
@json_option
@pass_options
def logout(options: Options) -> None:
    """End the saved session on the control center and delete it."""
    path = credentials_path()
    saved = load_credentials(path)
    if saved is None:
        _say(options, {"logged_out": False, "message": "not logged in"}, "not logged in")
        return
    problem: str | None = None
    revoked = False
    try:
        current = fresh_credentials(path) or saved
        with ControlCenterClient(saved.cc_url, current.token) as client:
            client.logout()
        revoked = True
    except ApiError as exc:
        if exc.status != 401:
            problem = f"{exc.message} ({exc.code})"
        # 401: the session had already ended (expired or revoked).
    except SessionExpired:
        pass  # nothing left to end
    except (Unreachable, CredentialsError, OSError) as exc:
        problem = str(exc)
    delete_credentials(path)
    message = f"logged out of {saved.cc_url}; removed {path}"
    _say(options, {"logged_out": True, "revoked": revoked, "credentials": str(path)}, message)
    if problem is not None:
        click.echo(f"error: the session could not be ended on the server: {problem}", err=True)
        sys.exit(1)


def _say(options: Options, value: Any, text: str) -> None:
    if options.json:
        print_json(value)
    else:
        click.echo(text)


# -- users ----------------------------------------------------------------------------------


@cli.group()
def users() -> None:
    """Users of the control center (and of the orchestrator): list, create, update, delete."""


@users.command("list")
@click.option("--role", help="Only users with this role.")
@click.option(
    "--enabled/--disabled", "enabled", default=None, help="Only enabled (disabled) users."
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@cc_url_option
@json_option
@pass_options
def list_users(
    options: Options, role: str | None, enabled: bool | None, limit: int, offset: int
) -> None:
    """List users."""
    with options.control_center() as client:
        page = client.list_users(role=role, enabled=enabled, limit=limit, offset=offset)
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(user_table(page.items))
    click.echo(page_note(page, "users"))


@users.command("create")
@click.argument("username")
@click.option("--email", required=True, help="The user's email address (unique).")
@click.option("--role", "roles", multiple=True, help="A role (repeat for more); default: viewer.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (one line).")
@click.option(
    "--must-change-password", is_flag=True, help="Make the user change it at first login."
)
@cc_url_option
@json_option
@pass_options
def create_user(
    options: Options,
    username: str,
    email: str,
    roles: tuple[str, ...],
    password_stdin: bool,
    must_change_password: bool,
) -> None:
    """Create user USERNAME; the password is asked twice (hidden) unless --password-stdin."""
    password = (
        _read_secret_line("password")
        if password_stdin
        else click.prompt(
            f"Password for {username}", hide_input=True, confirmation_prompt=True, err=True
        )
    )
    with options.control_center() as client:
        created = client.create_user(
            username,
            email,
            password,
            roles=list(roles) or None,
            must_change_password=must_change_password,
        )
    if options.json:
        print_json(created)
    else:
        click.echo(f"created user {created.username} ({', '.join(created.roles)}): {created.id}")


@users.command("update")
@click.argument("user_id", metavar="ID")
@click.option("--email", help="A new email address.")
@click.option("--role", "roles", multiple=True, help="Replace the roles (repeat for more).")
@click.option("--enable/--disable", "enabled", default=None, help="Enable or disable the user.")
@cc_url_option
@json_option
@pass_options
def update_user(
    options: Options,
    user_id: str,
    email: str | None,
    roles: tuple[str, ...],
    enabled: bool | None,
) -> None:
    """Change user ID's email, roles or whether it is enabled."""
    fields: dict[str, Any] = {}
    if email is not None:
        fields["email"] = email
    if roles:
        fields["roles"] = list(roles)
    if enabled is not None:
        fields["enabled"] = enabled
    if not fields:
        raise click.UsageError("nothing to change: give --email, --role, --enable or --disable")
    with options.control_center() as client:
        message = client.update_user(user_id, fields)
    _say(options, {"id": user_id, "changed": sorted(fields), "message": message}, message)


@users.command("delete")
@click.argument("user_id", metavar="ID")
@cc_url_option
@json_option
@pass_options
def delete_user(options: Options, user_id: str) -> None:
    """Delete user ID."""
    with options.control_center() as client:
        message = client.delete_user(user_id)
    _say(options, {"id": user_id, "message": message}, message)


def user_table(rows: list[User]) -> Table:
    table = _table("id", "username", "email", "roles", "enabled", "mfa", "last login")
    for u in rows:
        table.add_row(
            u.id,
            u.username,
            u.email,
            ", ".join(u.roles),
            _yes_no(u.enabled),
            _yes_no(u.mfa_enabled),
            when(u.last_login),
        )
    return table


# -- policies -------------------------------------------------------------------------------


@cli.group()
def policies() -> None:
    """Access policies: list, show, create, update, delete."""


@policies.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@cc_url_option
@json_option
@pass_options
def list_policies(options: Options, limit: int, offset: int) -> None:
    """List policies."""
    with options.control_center() as client:
        page = client.list_policies(limit=limit, offset=offset)
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(policy_table(page.items))
    click.echo(page_note(page, "policies"))


@policies.command("show")
@click.argument("policy_id", metavar="ID")
@cc_url_option
@json_option
@pass_options
def show_policy(options: Options, policy_id: str) -> None:
    """Show policy ID with its rules."""
    with options.control_center() as client:
        found = client.get_policy(policy_id)
    if options.json:
        print_json(found)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for name, value in msgspec.structs.asdict(found).items():
        if name != "rules":
            grid.add_row(name, _iso(value) if isinstance(value, datetime) else str(value))
    grid.add_row("rules", str(len(found.rules)))
    stdout.print(grid)
    if found.rules:
        stdout.print(rule_table(found.rules))


@policies.command("create")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@cc_url_option
@json_option
@pass_options
def create_policy(options: Options, file: str) -> None:
    """Create the policy in FILE (JSON or YAML: name, version, description, rules, enabled)."""
    document = _read_policy(file)
    with options.control_center() as client, _about(file):
        created = client.create_policy(document)
    if options.json:
        print_json(created)
    else:
        click.echo(f"created policy {created.name} {created.version}: {created.id}")


@policies.command("update")
@click.argument("policy_id", metavar="ID")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@cc_url_option
@json_option
@pass_options
def update_policy(options: Options, policy_id: str, file: str) -> None:
    """Change policy ID to the fields FILE gives (JSON or YAML; others stay)."""
    document = _read_policy(file)
    with options.control_center() as client, _about(file):
        message = client.update_policy(policy_id, document)
    _say(options, {"id": policy_id, "changed": sorted(document), "message": message}, message)


@policies.command("delete")
@click.argument("policy_id", metavar="ID")
@cc_url_option
@json_option
@pass_options
def delete_policy(options: Options, policy_id: str) -> None:
    """Delete policy ID."""
    with options.control_center() as client:
        message = client.delete_policy(policy_id)
    _say(options, {"id": policy_id, "message": message}, message)


def _read_policy(file: str) -> dict[str, Any]:
    """A policy document: JSON when FILE ends in .json, else YAML (JSON is YAML too)."""
    source = "stdin" if file == "-" else file
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        raise Failure(f"{source}: {exc.strerror}") from exc
    try:
        document = json.loads(text) if file.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if file.endswith(".json") else "YAML"
        raise Failure(f"{source}: not valid {kind}: {exc}") from exc
    if not isinstance(document, dict):
        raise Failure(f"{source}: a policy is a mapping (name, version, rules, enabled)")
    return document


@contextlib.contextmanager
def _about(file: str) -> Iterator[None]:
    """Name FILE in the error the control center gives for its content."""
    try:
        yield
    except ApiError as exc:
        if exc.status in (400, 422):
            source = "stdin" if file == "-" else file
            raise Failure(f"{source}: {exc.message} ({exc.code})") from exc
        raise


def policy_table(rows: list[Policy]) -> Table:
    table = _table("id", "name", "version", "enabled", "rules", "description")
    for p in rows:
        table.add_row(p.id, p.name, p.version, _yes_no(p.enabled), str(len(p.rules)), p.description)
    return table


def rule_table(rules: list[dict[str, Any]]) -> Table:
    table = _table("rule", "effect", "resource", "action", "condition")
    for number, rule in enumerate(rules):
        effect = str(rule.get("effect", ""))
        table.add_row(
            str(number),
            Text(effect, "red" if effect == "Deny" else "green"),
            _listed(rule.get("resource")),
            _listed(rule.get("action")),
            str(rule.get("condition") or "-"),
        )
    return table


def _listed(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "-" if value is None else str(value)


# -- API keys -------------------------------------------------------------------------------


@cli.group("api-keys")
def api_keys() -> None:
    """Your API keys: create (the key is shown once), list, revoke."""


@api_keys.command("create")
@click.argument("name")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), help="Expire after N days.")
@click.option("-d", "--description", default="", help="What the key is for.")
@cc_url_option
@json_option
@pass_options
def create_api_key(
    options: Options, name: str, expires_in_days: int | None, description: str
) -> None:
    """Create an API key named NAME and print it (the only time it is shown)."""
    with options.control_center() as client:
        created = client.create_api_key(
            name, description=description, expires_in_days=expires_in_days
        )
    if options.json:
        print_json(created)
    else:
        click.echo(created.key)
        expires = _iso(created.expires_at) if created.expires_at else "never"
        click.echo(f"api key {created.name} ({created.id}), expires {expires}", err=True)
    click.echo(
        "warning: this is the only time the key is shown; store it now (it cannot be "
        "retrieved again, only revoked)",
        err=True,
    )


@api_keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.option("--user-id", help="Another user's keys (administrators).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@cc_url_option
@json_option
@pass_options
def list_api_keys(
    options: Options, include_revoked: bool, user_id: str | None, limit: int, offset: int
) -> None:
    """List your API keys (their prefixes; never the keys)."""
    with options.control_center() as client:
        page = client.list_api_keys(
            user_id=user_id, include_revoked=include_revoked, limit=limit, offset=offset
        )
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(api_key_table(page.items))
    click.echo(page_note(page, "API keys"))


@api_keys.command("revoke")
@click.argument("key_id", metavar="ID")
@cc_url_option
@json_option
@pass_options
def revoke_api_key(options: Options, key_id: str) -> None:
    """Revoke API key ID: it stops working at once."""
    with options.control_center() as client:
        message = client.revoke_api_key(key_id)
    _say(options, {"id": key_id, "message": message}, message)


def api_key_table(rows: list[ApiKey]) -> Table:
    table = _table("id", "name", "prefix", "created", "expires", "last used", "revoked")
    for k in rows:
        table.add_row(
            k.id,
            k.name,
            k.key_prefix,
            when(k.created_at),
            when(k.expires_at) if k.expires_at else "never",
            when(k.last_used),
            Text(when(k.revoked_at), "red") if k.revoked_at else "-",
        )
    return table


# -- audit ----------------------------------------------------------------------------------


@cli.group()
def audit() -> None:
    """The audit log: read it, and verify its hash chain."""


@audit.command("logs")
@click.option("--user-id", help="Only this user's records.")
@click.option("--action", help="Only this action (users.create, auth.login, …).")
@click.option("--resource", help="This resource, or a prefix ending in * (users:*).")
@click.option("--from", "since", metavar="TIME", help="From (ISO 8601 with a zone).")
@click.option("--to", "until", metavar="TIME", help="Until (ISO 8601 with a zone).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--wide", is_flag=True, help="Show whole ids.")
@cc_url_option
@json_option
@pass_options
def audit_logs(
    options: Options,
    user_id: str | None,
    action: str | None,
    resource: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    offset: int,
    wide: bool,
) -> None:
    """Audit records, newest first."""
    with options.control_center() as client:
        page = client.audit_logs(
            user_id=user_id,
            action=action,
            resource=resource,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(audit_table(page.items, wide=wide))
    click.echo(page_note(page, "audit records"))


def audit_table(rows: list[AuditRecord], *, wide: bool = False) -> Table:
    table = _table("id", "time", "user", "action", "resource", "result", "ip", "status")
    styles = {"success": "green", "denied": "red", "failure": "yellow", "error": "red"}
    for r in rows:
        table.add_row(
            short_id(r.id, wide),
            when(r.timestamp),
            short_id(r.user_id, wide) if r.user_id else "-",
            r.action,
            r.resource,
            Text(r.result, styles.get(r.result, "")),
            r.ip or "-",
            str(r.details.get("status", "")),
        )
    return table


# -- helpers --------------------------------------------------------------------------------


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold")
    for column in columns:
        wraps = column in ("description", "resource", "email", "condition")
        table.add_column(column, no_wrap=not wraps)
    return table


def _yes_no(value: bool) -> Text:
    return Text("yes", "green") if value else Text("no", "dim")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
