"""`provisioning login` and `logout`: a session on the control center, saved for the
commands that follow.

`login` asks for the password (hidden; or one line on stdin with `--password-stdin`)
and saves the session (`orchestrator.cc_client.credentials_path()`, mode 0600). Every
command then sends its access token when no `--token`/`$PROVISIONING_TOKEN` is given,
renewing it once through `POST /auth/refresh` when it has expired. `logout` ends the
session on the control center and deletes the saved login.

Passwords are never echoed, logged, printed or saved.
"""

from __future__ import annotations

import sys

import click

from orchestrator.cc_client import (
    ControlCenterClient,
    Credentials,
    CredentialsError,
    Login,
    SessionExpired,
    credentials_lock,
    delete_credentials,
    fresh_credentials,
    load_credentials,
    save_credentials,
)
from orchestrator.cli.common import (
    Failure,
    Options,
    cc_url_option,
    json_option,
    pass_options,
    print_json,
    read_secret_line,
    say,
)
from orchestrator.cli.errors import refused_login, remember_spent_code
from orchestrator.cli.tables import iso
from orchestrator.client import ApiError, Unreachable
from orchestrator.settings import ConfigError

_NOTES = {
    "MFA_REQUIRED": (
        "your role requires MFA: enroll a TOTP device (`provisioning mfa enroll`, then "
        "`provisioning mfa verify CODE`) before anything else"
    ),
    "PASSWORD_CHANGE_REQUIRED": (
        "this is a one-time password: change it (`provisioning password`) before anything else"
    ),
}


@click.command()
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
        read_secret_line("password")
        if password_stdin
        else click.prompt("Password", hide_input=True, err=True)
    )
    with ControlCenterClient(cc_url) as client:
        try:
            answer = _log_in(client, username, password, mfa_code, password_stdin)
        except _Refused as refused:
            raise Failure(refused_login(refused.error, refused.mfa_code)) from refused.error
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
    path = options.credentials_path()
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
        click.echo(f"session saved in {path}; the token expires at {iso(answer.expires_at)}")
    for restriction in answer.restrictions:
        click.echo(f"note: {_NOTES.get(restriction, restriction)}", err=True)


class _Refused(Exception):
    def __init__(self, error: ApiError, mfa_code: str | None) -> None:
        super().__init__(error.message)
        self.error, self.mfa_code = error, mfa_code


def _log_in(
    client: ControlCenterClient,
    username: str,
    password: str,
    mfa_code: str | None,
    password_stdin: bool,
) -> Login:
    """The login's answer; `_Refused` (with the code tried) when it is refused."""
    try:
        answer = client.login(username, password, mfa_code)
    except ApiError as exc:
        # A failed login does not say which factor was wrong: offer the second one.
        if exc.status != 401 or mfa_code is not None or password_stdin or not sys.stdin.isatty():
            raise _Refused(exc, mfa_code) from exc
        mfa_code = click.prompt(
            "Login refused. If your account uses MFA, enter a code (empty to stop)",
            default="",
            show_default=False,
            err=True,
        ).strip()
        if not mfa_code:
            raise _Refused(exc, None) from exc
        try:
            answer = client.login(username, password, mfa_code)
        except ApiError as again:
            raise _Refused(again, mfa_code) from again
    if mfa_code:
        remember_spent_code(mfa_code)
    return answer


def _orchestrator_url(options: Options) -> str:
    """The orchestrator address to remember; empty when the configuration is unusable."""
    try:
        return options.base_url()
    except ConfigError:
        return ""


@click.command()
@json_option
@pass_options
def logout(options: Options) -> None:
    """End the saved session on the control center and delete it."""
    path = options.credentials_path()
    saved = load_credentials(path)
    if saved is None:
        say(options, {"logged_out": False, "message": "not logged in"}, "not logged in")
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
    say(options, {"logged_out": True, "revoked": revoked, "credentials": str(path)}, message)
    if problem is not None:
        click.echo(f"error: the session could not be ended on the server: {problem}", err=True)
        sys.exit(1)
