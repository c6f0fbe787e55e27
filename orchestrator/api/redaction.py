"""What the API never shows of a task's parameters: secrets.

Parameters are free-form, so secrets are recognised by where they sit:
- the value of any key that names a secret (`password`, `db_token`, `auth`, `bearer`,
  `Authorization`, `cookie`, …), whatever its shape;
- in a list of strings (a command's `args`): `--password=…`, `token=…`, and the item
  after a flag that names a secret (`--password`, `-token`);
- in any string: the credential after `Bearer `/`Basic `, and the password of a URL
  (`postgresql://user:…@host`).
The rest is shown as given. Put secrets in those places (or in a provider's own
credentials), not in free text: a secret in, say, a shell script's body cannot be told
apart from the script.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "********"
SECRET_NAME = re.compile(
    r"pass|secret|token|api[_-]?key|credential|private|auth|bearer|cookie|session|signature",
    re.IGNORECASE,
)
_ASSIGNMENT = re.compile(r"^(-{0,2}[\w.-]+)=", re.ASCII)
_FLAG = re.compile(r"^-{1,2}[\w.-]+$", re.ASCII)
_SCHEME_CREDENTIAL = re.compile(r"\b(Bearer|Basic|Token)\s+\S+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@", re.IGNORECASE)


def redact(value: Any) -> Any:
    """`value` with every recognisable secret replaced by `********`."""
    if isinstance(value, dict):
        return {
            key: MASK if SECRET_NAME.search(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return redact_args(value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_args(items: list[Any]) -> list[Any]:
    """A list, with flag-style secrets (`--password=…`, `--token …`) masked too."""
    shown: list[Any] = []
    hide_next = False
    for item in items:
        if not isinstance(item, str):
            shown.append(redact(item))
            hide_next = False
            continue
        if hide_next:
            shown.append(MASK)
            hide_next = False
            continue
        assignment = _ASSIGNMENT.match(item)
        if assignment and SECRET_NAME.search(assignment.group(1)):
            shown.append(f"{assignment.group(1)}={MASK}")
            continue
        hide_next = bool(_FLAG.match(item)) and bool(SECRET_NAME.search(item))
        shown.append(redact_text(item))
    return shown


def redact_text(text: str) -> str:
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)
    return _SCHEME_CREDENTIAL.sub(rf"\g<1> {MASK}", text)
