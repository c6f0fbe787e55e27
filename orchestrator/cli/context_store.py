"""Where the named contexts are kept (`contexts.json` in the CLI's configuration
directory, 0600), and which one is active; the commands are in `cli/contexts.py`."""

from __future__ import annotations

import contextlib
import os

import msgspec

from orchestrator.cc_client import CredentialsError, config_dir

CONTEXTS_FILE = "contexts.json"


class Context(msgspec.Struct, kw_only=True):
    """One installation: where its orchestrator and control center answer."""

    url: str
    cc_url: str = ""


class Contexts(msgspec.Struct, kw_only=True):
    """`contexts.json`: every context by name, and the one in use ("" for none)."""

    current: str = ""
    contexts: dict[str, Context] = {}


def load_contexts() -> Contexts:
    path = config_dir() / CONTEXTS_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=Contexts)
    except FileNotFoundError:
        return Contexts()
    except (OSError, msgspec.DecodeError) as exc:
        raise CredentialsError(
            f"the contexts file {path} is unreadable ({exc}); fix or delete it"
        ) from exc


def save_contexts(found: Contexts) -> None:
    """Write the file whole, readable by the owner only."""
    path = config_dir() / CONTEXTS_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(msgspec.json.format(msgspec.json.encode(found), indent=2) + b"\n")
    os.replace(temporary, path)


def active_context(chosen: str | None) -> tuple[str, Context] | None:
    """The context `--context` names, else the one in use; None for none."""
    found = load_contexts()
    name = chosen or found.current
    if not name:
        return None
    if name not in found.contexts:
        raise CredentialsError(f"no context named {name!r}; see `provisioning context list`")
    return name, found.contexts[name]
