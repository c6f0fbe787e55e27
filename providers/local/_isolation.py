"""What a local command may not see of the orchestrator: how it is kept from it.

- `user`: the command runs as another, unprivileged user (`run_as`), through
  `setpriv` (util-linux), once its root-owned wrapper has started: the wrapper still
  writes the exit status, the command alone runs unprivileged. The protected paths are
  kept from it by their modes: each must be unreachable by that user (a directory it
  cannot enter, a file it cannot read, or one of their parents). One the orchestrator
  owns is made private (`chmod go-rwx`) the first time it is found reachable; any other
  is refused.
- `bwrap`: the command runs as the orchestrator's user in a bubblewrap sandbox (its own
  mount, process and user namespaces; a minimal /dev; no capabilities) where each
  protected directory is an empty tmpfs and each protected file is unreadable. It is
  what works without root (AWX isolates its jobs the same way).
- `none`: the command sees whatever the orchestrator's user sees, its secrets included.

`auto` picks `user` for an orchestrator running as root, `bwrap` otherwise.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from providers.base import PermanentProviderError, ProviderConfigError

log = structlog.get_logger(__name__)

MODES = ("auto", "user", "bwrap", "none")
DEFAULT_RUN_AS = "provisioning-run"
_ACL = "system.posix_acl_access"
_READ, _ENTER = 0o4, 0o1


@dataclass(frozen=True, slots=True)
class Isolation:
    """How commands are isolated, resolved once for a provider instance."""

    mode: str  # "user", "bwrap" or "none"
    #: The command's HOME: the home directory of the user it runs as.
    home: str
    #: What the command's argument list is prefixed with (`bwrap`: before the paths).
    prefix: tuple[str, ...] = ()
    uid: int | None = None
    gids: frozenset[int] = frozenset()
    run_as: str | None = None

    @classmethod
    def configure(cls, mode: str, run_as: str) -> Isolation:
        """Resolve `auto`, check that the mode can work here; `ProviderConfigError` if not."""
        if mode not in MODES:
            raise ProviderConfigError(f"isolation must be one of {', '.join(MODES)}")
        root = os.geteuid() == 0
        if mode == "auto":
            mode = "user" if root else "bwrap"
        if mode == "none":
            return cls("none", home=_own_home())
        if mode == "user":
            return _user(run_as, root)
        return _bwrap(root)

    def argv(self, protected: Iterable[Path]) -> tuple[str, ...]:
        """The prefix for one command, keeping `protected` from it: paths are made
        unreachable (`user`) or hidden (`bwrap`); raises `PermanentProviderError` for a
        path that cannot be protected."""
        if self.mode == "user":
            for path in protected:
                self._make_unreachable(path)
            return self.prefix
        if self.mode == "bwrap":
            return (*self.prefix, *_hidden(protected), "--")
        return ()

    def _make_unreachable(self, path: Path) -> None:
        assert self.uid is not None
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return  # nothing there to read
        if info.st_uid != self.uid and not info.st_mode & 0o077:
            return  # open to its owner only (a mask of 0 for an ACL): the common case
        resolved = path.resolve()
        if not _reachable(resolved, self.uid, self.gids):
            return
        info = os.stat(resolved)
        if info.st_uid != os.geteuid() or info.st_uid == self.uid:
            raise PermanentProviderError(
                f"{resolved} is readable by {self.run_as!r}, who runs local commands, and "
                "is not this orchestrator's to make private: make it so (chmod go-rwx) or "
                "run commands with isolation = 'bwrap'"
            )
        os.chmod(resolved, stat.S_IMODE(info.st_mode) & ~0o077)
        log.warning(
            "made a protected path private: local commands run as another user",
            path=str(resolved),
            run_as=self.run_as,
        )


def _user(run_as: str, root: bool) -> Isolation:
    if not root:
        raise ProviderConfigError(
            "isolation = 'user' needs an orchestrator running as root (it starts commands "
            "as `run_as`); without root, use isolation = 'bwrap' (package bubblewrap)"
        )
    try:
        entry = pwd.getpwnam(run_as)
    except KeyError:
        raise ProviderConfigError(
            f"run_as: no user {run_as!r} to run local commands as: create it "
            f"(`./dev setup` does: useradd --system --user-group --no-create-home "
            f"--home-dir /nonexistent --shell /usr/sbin/nologin {run_as}), name another "
            "one in `run_as`, or set `isolation`"
        ) from None
    if entry.pw_uid == 0:
        raise ProviderConfigError(f"run_as: {run_as!r} is root; name an unprivileged user")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise ProviderConfigError(
            "isolation = 'user' needs `setpriv` (package util-linux), which is not installed"
        )
    prefix = (
        setpriv,
        f"--reuid={entry.pw_uid}",
        f"--regid={entry.pw_gid}",
        "--clear-groups",
        "--",
    )
    _try(prefix, "isolation = 'user'")
    return Isolation(
        "user",
        home=entry.pw_dir,
        prefix=prefix,
        uid=entry.pw_uid,
        gids=frozenset({entry.pw_gid}),
        run_as=run_as,
    )


def _bwrap(root: bool) -> Isolation:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ProviderConfigError(
            "isolation = 'bwrap' (what 'auto' picks without root) needs bubblewrap: install "
            "the package `bubblewrap`, run the orchestrator as root (isolation = 'user'), or "
            "set isolation = 'none' (commands can then read the orchestrator's secrets)"
        )
    # Not --die-with-parent: a command outlives an orchestrator that dies (it is found
    # again, or its end recorded, by the next one). Not --new-session: the provider
    # stops a command through its process group.
    prefix = (
        bwrap,
        *("--bind", "/", "/", "--dev", "/dev", "--proc", "/proc"),
        *("--unshare-user-try", "--unshare-pid", "--unshare-ipc", "--unshare-uts"),
        *("--cap-drop", "ALL"),
    )
    _try((*prefix, "--"), "isolation = 'bwrap'")
    return Isolation("bwrap", home=_own_home(), prefix=prefix)


def _try(prefix: Sequence[str], setting: str) -> None:
    """Run `true` as commands will be run, so that a host where that cannot work is
    refused at start rather than at each command."""
    try:
        subprocess.run(
            [*prefix, "/bin/true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
            timeout=30,
            env={"PATH": os.defpath},
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        why = detail.decode(errors="replace").strip() or str(exc)
        raise ProviderConfigError(f"{setting} does not work on this host: {why}") from None


def _hidden(paths: Iterable[Path]) -> list[str]:
    """bwrap arguments that hide each existing path: an empty tmpfs over a directory,
    /dev/null over a file (a path inside another hidden one needs nothing more)."""
    args: list[str] = []
    hidden: list[Path] = []
    for path in sorted({p.resolve() for p in paths}):
        if any(path.is_relative_to(parent) for parent in hidden):
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir():
                args += ["--tmpfs", str(path)]
            elif path.exists():
                args += ["--ro-bind", "/dev/null", str(path)]
            else:
                continue
            hidden.append(path)
    return args


def _reachable(path: Path, uid: int, gids: frozenset[int]) -> bool:
    """Whether `uid` could read `path` (a file) or enter it (a directory), judging by the
    modes of the path and of its parents. A path with an ACL counts as open to anyone its
    group class lets in."""
    parts = path.parts
    for depth in range(1, len(parts) + 1):
        current = Path(*parts[:depth])
        try:
            info = os.stat(current)
        except FileNotFoundError:
            return False
        last = depth == len(parts)
        wanted = _READ if last and not stat.S_ISDIR(info.st_mode) else _ENTER
        if not _permits(current, info, uid, gids, wanted):
            return False
    return True


def _permits(path: Path, info: os.stat_result, uid: int, gids: frozenset[int], wanted: int) -> bool:
    mode = info.st_mode
    if info.st_uid == uid:
        return bool(mode & (wanted << 6))
    group = bool(mode & (wanted << 3))
    if info.st_gid in gids:
        return group
    if group and _has_acl(path):
        return True
    return bool(mode & wanted)


def _has_acl(path: Path) -> bool:
    try:
        return _ACL in os.listxattr(path)
    except OSError:
        return False


def _own_home() -> str:
    home = os.environ.get("HOME")
    if home:
        return home
    try:
        return pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return "/"
