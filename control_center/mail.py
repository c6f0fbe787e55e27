"""Password-reset emails, through the SMTP server of `[smtp]` (aiosmtplib).

Sent after the answer has gone (a background task), so that `POST
/auth/forgot-password` takes the same time whether or not the address has an account.
The token is in the message only: never in a log line or the audit trail.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage

import aiosmtplib
import structlog

from orchestrator.settings import Settings

log = structlog.get_logger(__name__)


def configured(settings: Settings) -> bool:
    return bool(settings.smtp.host)


def reset_message(
    settings: Settings, to: str, username: str, token: str, expires_at: datetime
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.smtp.sender
    message["To"] = to
    message["Subject"] = "Reset your provisioning password"
    if settings.auth.reset_url:
        how = f"Open this link to choose a new password:\n\n    {settings.auth.reset_url}"
        how = how.replace("{token}", token)
    else:
        how = (
            "Choose a new password with this token:\n\n"
            f"    POST /auth/reset-password\n"
            f'    {{"token": "{token}", "new_password": "<your new password>"}}'
        )
    message.set_content(
        f"Hello {username},\n\n"
        "Someone (hopefully you) asked to reset the password of this account.\n"
        f"{how}\n\n"
        f"The token works once, until {expires_at.isoformat(timespec='seconds')}, and "
        "signs out every session of the account.\nIf you did not ask for it, ignore this "
        "email: your password stays as it is.\n"
    )
    return message


async def send(settings: Settings, message: EmailMessage, *, user_id: str) -> bool:
    """Send `message` through the configured server; log (without the content) and
    return False when it cannot be delivered."""
    smtp = settings.smtp
    try:
        await aiosmtplib.send(
            message,
            hostname=smtp.host,
            port=smtp.port,
            username=smtp.username or None,
            password=smtp.password or None,
            use_tls=smtp.security == "tls",
            start_tls=smtp.security == "starttls",
            timeout=smtp.timeout,
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        log.warning(
            "password-reset email not sent",
            user_id=user_id,
            smtp_host=smtp.host,
            error=type(exc).__name__,
        )
        return False
    log.info("password-reset email sent", user_id=user_id, smtp_host=smtp.host)
    return True
