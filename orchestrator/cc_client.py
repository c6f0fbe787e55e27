"""A small typed client of the control center's HTTP API, and the saved login.

`ControlCenterClient` calls `/auth`, `/users`, `/policies`, `/api-keys` and
`/audit/logs`; like `OrchestratorClient` it unwraps the envelope, returns the `data` of a
success decoded into the control center's own types (`control_center.schemas`, named
here as the CLI names them), and raises `ApiError` for an error envelope or an
unexpected answer. A control center that cannot be reached raises
`ControlCenterUnreachable` (an `Unreachable`).

`provisioning login` saves the session in `credentials_path()`
(`$XDG_CONFIG_HOME/provisioning/credentials.json`, else
`~/.config/provisioning/credentials.json`; a named context's in
`contexts/NAME/credentials.json` there): the directory is created 0700 and the file
0600, written whole to a temporary file and renamed over the old one. `fresh_credentials`
renews an expired access token once, with `POST /auth/refresh`, under an exclusive lock
so two commands never spend the same refresh token (which would end the session).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from control_center.schemas import (
    ApiKeyCreated,
    ApiKeyIn,
    LoginIn,
    MfaCodeIn,
    PasswordChange,
    PolicyCreated,
    RefreshIn,
    UserIn,
)
from control_center.schemas import ApiKeyOut as ApiKey
from control_center.schemas import AuditOut as AuditRecord
from control_center.schemas import LoginOut as Login
from control_center.schemas import MfaEnrollOut as MfaEnrollment
from control_center.schemas import MfaVerifyOut as MfaActivated
from control_center.schemas import PolicyOut as Policy
from control_center.schemas import TokenOut as TokenPair
from control_center.schemas import UserOut as User
from orchestrator.client import ApiClient, ApiError, Page, Unreachable, _segment

__all__ = [
    "ApiKey",
    "ApiKeyCreated",
    "AuditRecord",
    "ControlCenterClient",
    "ControlCenterUnreachable",
    "Credentials",
    "CredentialsError",
    "Login",
    "MfaActivated",
    "MfaEnrollment",
    "Policy",
    "PolicyCreated",
    "SessionExpired",
    "TokenPair",
    "User",
    "config_dir",
    "credentials_lock",
    "credentials_path",
    "delete_credentials",
    "fresh_credentials",
    "load_credentials",
    "save_credentials",
]

#: An access token this close to its expiry is renewed before it is used.
EXPIRY_MARGIN = timedelta(seconds=30)
CREDENTIALS_FILE = "credentials.json"
_LOCK_FILE = ".credentials.lock"


class ControlCenterUnreachable(Unreachable):
    """No control center answers at the base URL."""


class CredentialsError(Exception):
    """The saved login cannot be read."""


class SessionExpired(Exception):
    """The saved login can no longer be renewed: log in again."""


class ControlCenterClient(ApiClient):
    """Calls the control center at `base_url` (see `ApiClient`: the same envelope, paging
    and transport errors as the orchestrator's API)."""

    unreachable = ControlCenterUnreachable

    # -- sessions -------------------------------------------------------------------------

    def login(self, username: str, password: str, mfa_code: str | None = None) -> Login:
        body = LoginIn(username=username, password=password, mfa_code=mfa_code)
        return self._call("POST", "/auth/login", Login, json=body)

    def refresh(self, refresh_token: str) -> TokenPair:
        """Spend `refresh_token` for a new pair (the old one is then useless)."""
        body = RefreshIn(refresh_token=refresh_token)
        return self._call("POST", "/auth/refresh", TokenPair, json=body)

    def logout(self) -> str:
        """Revoke the access token this client sends, and its session."""
        return self._call("POST", "/auth/logout", str)

    # -- users ----------------------------------------------------------------------------

    def list_users(
        self,
        *,
        role: str | None = None,
        enabled: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[User]:
        flag = None if enabled is None else str(enabled).lower()
        query = {"role": role, "enabled": flag, "limit": limit, "offset": offset}
        return self._page("/users", query, list[User])

    def get_user(self, user_id: str) -> User:
        return self._call("GET", f"/users/{_segment(user_id)}", User)

    def create_user(
        self,
        username: str,
        email: str,
        password: str,
        *,
        roles: list[str] | None = None,
        must_change_password: bool = False,
    ) -> User:
        body = UserIn(
            username=username,
            email=email,
            password=password,
            must_change_password=must_change_password,
        )
        if roles:
            body.roles = roles
        return self._call("POST", "/users", User, json=body)

    def update_user(self, user_id: str, fields: dict[str, Any]) -> str:
        """Change the given fields (`email`, `roles`, `enabled`, …); return the message."""
        return self._call("PUT", f"/users/{_segment(user_id)}", str, json=fields)

    def delete_user(self, user_id: str) -> str:
        return self._call("DELETE", f"/users/{_segment(user_id)}", str)

    # -- policies -------------------------------------------------------------------------

    def list_policies(self, *, limit: int | None = None, offset: int | None = None) -> Page[Policy]:
        return self._page("/policies", {"limit": limit, "offset": offset}, list[Policy])

    def get_policy(self, policy_id: str) -> Policy:
        return self._call("GET", f"/policies/{_segment(policy_id)}", Policy)

    def create_policy(self, document: dict[str, Any]) -> PolicyCreated:
        """`document` holds `name, rules` and optionally `version, description, enabled`."""
        return self._call("POST", "/policies", PolicyCreated, json=document)

    def update_policy(self, policy_id: str, document: dict[str, Any]) -> str:
        return self._call("PUT", f"/policies/{_segment(policy_id)}", str, json=document)

    def delete_policy(self, policy_id: str) -> str:
        return self._call("DELETE", f"/policies/{_segment(policy_id)}", str)

    # -- API keys -------------------------------------------------------------------------

    def create_api_key(
        self, name: str, *, description: str = "", expires_in_days: int | None = None
    ) -> ApiKeyCreated:
        body = ApiKeyIn(name=name, description=description, expires_in_days=expires_in_days)
        return self._call("POST", "/api-keys", ApiKeyCreated, json=body)

    def list_api_keys(
        self,
        *,
        user_id: str | None = None,
        include_revoked: bool = False,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[ApiKey]:
        query = {
            "user_id": user_id,
            "include_revoked": "true" if include_revoked else None,
            "limit": limit,
            "offset": offset,
        }
        return self._page("/api-keys", query, list[ApiKey])

    def revoke_api_key(self, key_id: str) -> str:
        return self._call("DELETE", f"/api-keys/{_segment(key_id)}", str)

    # -- audit ----------------------------------------------------------------------------

    def audit_logs(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        resource: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[AuditRecord]:
        """Newest first; `since`/`until` are ISO 8601 with a zone, sent as `from`/`to`."""
        query = {
            "user_id": user_id,
            "action": action,
            "resource": resource,
            "from": since,
            "to": until,
            "limit": limit,
            "offset": offset,
        }
        return self._page("/audit/logs", query, list[AuditRecord])

    # -- your own account -------------------------------------------------------------

    def enroll_mfa(self) -> MfaEnrollment:
        return self._call("POST", "/auth/mfa/enroll", MfaEnrollment)

    def verify_mfa(self, code: str) -> MfaActivated:
        return self._call("POST", "/auth/mfa/verify", MfaActivated, json=MfaCodeIn(code=code))

    def disable_mfa(self, code: str) -> Any:
        return self._call("POST", "/auth/mfa/disable", Any, json=MfaCodeIn(code=code))

    def change_password(self, current: str, new: str) -> Any:
        body = PasswordChange(current_password=current, new_password=new, confirm_new_password=new)
        return self._call("PUT", "/user/password", Any, json=body)


# -- the saved login ------------------------------------------------------------------------


class Credentials(msgspec.Struct, kw_only=True):
    """What `provisioning login` saves: never a password."""

    token: str
    refresh_token: str
    expires_at: datetime
    #: The control center that issued the tokens (and renews them).
    cc_url: str
    #: The orchestrator address in use at login.
    url: str
    refresh_expires_at: datetime | None = None
    username: str | None = None
    user_id: str | None = None

    def expired(self, now: datetime | None = None) -> bool:
        """True when the access token expires within `EXPIRY_MARGIN`."""
        return self.expires_at <= (now or datetime.now(UTC)) + EXPIRY_MARGIN


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/provisioning`, else `~/.config/provisioning`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec: a relative value is invalid and ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "provisioning"


def credentials_path(context: str | None = None) -> Path:
    """Where the login is saved: `credentials.json`, or a named context's own
    (`contexts/NAME/credentials.json`), in `config_dir()`."""
    if context is None:
        return config_dir() / CREDENTIALS_FILE
    return config_dir() / "contexts" / context / CREDENTIALS_FILE


def load_credentials(path: Path | None = None) -> Credentials | None:
    """The saved login, or None when there is none."""
    path = path or credentials_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot read the saved login {path}: {exc.strerror}") from exc
    try:
        return msgspec.json.decode(raw, type=Credentials)
    except msgspec.DecodeError as exc:
        raise CredentialsError(
            f"the saved login {path} is unreadable ({exc}); log in again or delete it"
        ) from exc


def save_credentials(credentials: Credentials, path: Path | None = None) -> Path:
    """Write the login whole, readable by the owner only (directory 0700, file 0600)."""
    path = path or credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(msgspec.json.format(msgspec.json.encode(credentials), indent=2) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return path


def delete_credentials(path: Path | None = None) -> bool:
    """Remove the saved login; False when there was none."""
    path = path or credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def credentials_lock(path: Path | None = None) -> Iterator[None]:
    """An exclusive lock (across processes) on the saved login, for read-renew-write."""
    path = path or credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path.with_name(_LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def fresh_credentials(path: Path | None = None) -> Credentials | None:
    """The saved login with an access token that has not expired: renewed once through
    `POST /auth/refresh` when needed (and saved, with the rotated refresh token).

    Raises `SessionExpired` when the control center refuses the refresh token.
    """
    path = path or credentials_path()
    saved = load_credentials(path)
    if saved is None or not saved.expired():
        return saved
    with credentials_lock(path):
        # Another command may have renewed it while this one waited for the lock.
        saved = load_credentials(path)
        if saved is None or not saved.expired():
            return saved
        now = datetime.now(UTC)
        if saved.refresh_expires_at is not None and saved.refresh_expires_at <= now:
            raise SessionExpired(
                f"your session at {saved.cc_url} has expired; log in again (provisioning login)"
            )
        try:
            with ControlCenterClient(saved.cc_url) as client:
                pair = client.refresh(saved.refresh_token)
        except ApiError as exc:
            if exc.status != 401:
                raise
            raise SessionExpired(
                f"your session at {saved.cc_url} could not be renewed ({exc.message}); "
                "log in again (provisioning login)"
            ) from exc
        renewed = msgspec.structs.replace(
            saved,
            token=pair.token,
            expires_at=pair.expires_at,
            refresh_token=pair.refresh_token,
            refresh_expires_at=pair.refresh_expires_at,
        )
        save_credentials(renewed, path)
        return renewed
