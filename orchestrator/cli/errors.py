"""An API error as the CLI tells it: in the commands' terms, not HTTP's.

- A 401 to a request that carried no credential: `run \\`provisioning login\\``.
- A 429 with its reset time: when to try again as local time and a duration.
- Anything else: the API's message and code.

And TOTP codes this CLI has spent (`mfa verify`, `login`): a login refused with one of
them says that the code was already used, rather than the control center's one message
for every cause (which it keeps, so as not to tell which factor was wrong). Only a
digest of each spent code and when it was spent are kept, for three TOTP steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import datetime

from orchestrator.cc_client import config_dir
from orchestrator.client import ApiError
from orchestrator.clock import format_duration

#: How long a spent code is remembered: the steps a control center accepts a code in.
SPENT_FOR = 90.0
SPENT_FILE = "spent-codes.json"
LOGIN_HINT = "not logged in: run `provisioning login` (or give --token or $PROVISIONING_TOKEN)"


def message_of(error: ApiError, now: float | None = None) -> str:
    """The one line `error: …` shows for `error`."""
    if error.status == 401 and error.anonymous:
        return f"{LOGIN_HINT} ({error.code})"
    if error.status == 401 and "log in again" in error.message:
        return f"{error.message.split(';')[0]}: run `provisioning login` ({error.code})"
    reset = error.details.get("reset") if isinstance(error.details, dict) else None
    if error.status == 429 and isinstance(reset, int | float):
        head = error.message.split("; try again")[0]
        return f"{head}; {try_again_at(reset, now)} ({error.code})"
    return f"{error.message} ({error.code})"


def try_again_at(reset: float, now: float | None = None) -> str:
    """`try again at 15:42:07 (in 37s)`, in local time."""
    wait = max(0.0, reset - (time.time() if now is None else now))
    at = datetime.fromtimestamp(reset).astimezone().strftime("%H:%M:%S")
    return f"try again at {at} (in {format_duration(wait)})"


def _digest(code: str) -> str:
    return hashlib.sha256(code.strip().replace(" ", "").encode()).hexdigest()


def _read_spent() -> dict[str, float]:
    try:
        found = json.loads((config_dir() / SPENT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return (
        {k: v for k, v in found.items() if isinstance(v, int | float)}
        if isinstance(found, dict)
        else {}
    )


def remember_spent_code(code: str) -> None:
    """Note that the control center accepted TOTP `code` (best effort)."""
    now = time.time()
    spent = {k: v for k, v in _read_spent().items() if now - v < SPENT_FOR}
    spent[_digest(code)] = now
    path = config_dir() / SPENT_FILE
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(spent, file)
    except OSError:
        pass  # only a better message is lost


def recently_spent(code: str) -> bool:
    """Whether this CLI saw `code` accepted within the steps it could still match."""
    at = _read_spent().get(_digest(code))
    return at is not None and time.time() - at < SPENT_FOR


def refused_login(error: ApiError, mfa_code: str | None) -> str:
    """A refused login, saying what it can about a TOTP code."""
    if error.status != 401:
        return message_of(error)
    # A login is sent without a credential: its 401 is the refusal, not "log in".
    text = f"{error.message} ({error.code})"
    if not mfa_code:
        return text
    code = mfa_code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return text
    if recently_spent(code):
        return "this code was already used; wait for the next one (UNAUTHORIZED)"
    return (
        f"{text}; a TOTP code is accepted once: if it was just used "
        "(by `mfa verify` or another login), wait for the next one"
    )
