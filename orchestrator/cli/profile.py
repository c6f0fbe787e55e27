"""Your own account on the control center: TOTP enrollment and the password.

An administrator's first session (a one-time password, MFA required) goes:

    provisioning login -u admin
    provisioning mfa enroll          # add the secret to an authenticator app
    provisioning mfa verify 123456   # prints backup codes, once
    provisioning password            # replaces the one-time password
"""

from __future__ import annotations

import click

from orchestrator.cli.common import (
    Options,
    cc_url_option,
    json_option,
    pass_options,
    print_json,
    read_secret_line,
)
from orchestrator.cli.errors import remember_spent_code


@click.group()
def mfa() -> None:
    """Two-factor authentication (TOTP) for your account: enroll, verify, disable."""


@mfa.command("enroll")
@cc_url_option
@json_option
@pass_options
def enroll(options: Options) -> None:
    """Start enrollment: shows the secret and otpauth URI once; then `mfa verify CODE`."""
    with options.control_center() as client:
        enrollment = client.enroll_mfa()
    if options.json:
        print_json(enrollment)
        return
    click.echo(f"secret:      {enrollment.secret}")
    click.echo(f"otpauth URI: {enrollment.otpauth_uri}")
    click.echo(
        "Add it to an authenticator app, then run `provisioning mfa verify CODE` with the "
        "code it shows. The secret is not shown again.",
        err=True,
    )


@mfa.command("verify")
@click.argument("code")
@cc_url_option
@json_option
@pass_options
def verify(options: Options, code: str) -> None:
    """Activate TOTP with a current CODE; prints the backup codes, once."""
    with options.control_center() as client:
        activated = client.verify_mfa(code)
    remember_spent_code(code)
    if options.json:
        print_json(activated)
        return
    click.echo("two-factor authentication is on; backup codes (each works once):")
    for backup in activated.backup_codes:
        click.echo(f"  {backup}")
    click.echo("Keep them somewhere safe: they are not shown again.", err=True)


@mfa.command("disable")
@click.argument("code")
@cc_url_option
@pass_options
def disable(options: Options, code: str) -> None:
    """Turn TOTP off (needs a current CODE or a backup code)."""
    with options.control_center() as client:
        client.disable_mfa(code)
    remember_spent_code(code)
    click.echo("two-factor authentication is off")


@click.command()
@click.option("--password-stdin", is_flag=True, help="Read current and new password (2 lines).")
@cc_url_option
@pass_options
def password(options: Options, password_stdin: bool) -> None:
    """Change your password (the one-time password first of all)."""
    if password_stdin:
        current, new = read_secret_line("current password"), read_secret_line("new password")
    else:
        current = click.prompt("Current password", hide_input=True, err=True)
        new = click.prompt("New password", hide_input=True, confirmation_prompt=True, err=True)
    with options.control_center() as client:
        client.change_password(current, new)
    click.echo("password changed")
