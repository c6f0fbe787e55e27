"""One typed settings object, loaded from a TOML file and `PROVISIONING_*` variables.

Precedence, lowest first: built-in defaults, the TOML file (`--config`, else
`$PROVISIONING_CONFIG`, else `./provisioning.toml` when it exists), then environment
variables. A variable names a top-level key (`PROVISIONING_DATA_DIR`) or a key in a table
with a double underscore (`PROVISIONING_SERVER__PORT=9091`,
`PROVISIONING_EXECUTOR__GLOBAL_LIMIT=4`); its value is read as TOML when it parses as a
TOML value (numbers, booleans, arrays) and as a string otherwise.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from orchestrator.event_names import EVENT_NAMES
from orchestrator.fields import MAX_PARALLEL_LIMIT
from orchestrator.specs import TaskDefaults

ENV_PREFIX = "PROVISIONING_"
#: Variables read by the CLI as a client, or once at first start, not settings.
CLIENT_VARIABLES = frozenset(ENV_PREFIX + n for n in ("CONFIG", "URL", "TOKEN", "ADMIN_PASSWORD"))
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "console", "json")


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 9090
    #: Request bodies larger than this get 413.
    max_body_bytes: int = 1_048_576
    #: Request bodies nested deeper than this (objects and arrays, JSON or YAML) get
    #: 422, found by a scan before anything is built from them. The examples need 7.
    max_body_depth: int = 64
    #: A YAML body may expand (anchors and aliases counted as what they stand for) to
    #: at most this many nodes; past it, 422.
    max_body_nodes: int = 100_000
    #: Tasks one batch operation may expand into, and one workflow may hold (422 past).
    max_tasks_per_operation: int = 1_000
    max_tasks_per_workflow: int = 10_000
    #: How long a request with `wait: true` is held before answering (seconds).
    wait_timeout: float = 300.0
    #: An event stream client that does not take a message for this long is cut off.
    ws_send_timeout: float = 5.0
    #: ... and so is one that falls this many events behind the log.
    ws_max_lag: int = 10_000
    #: How long an Idempotency-Key's first answer is kept (seconds).
    idempotency_ttl: float = 24 * 3600.0
    #: How long a key whose request never ended (its process died) blocks retries with
    #: 409 (seconds); after it, a retry runs the request again.
    idempotency_pending_ttl: float = 60.0
    #: Event stream connections one user may hold at once (seed 001: 10).
    ws_connections_per_user: int = 10
    #: A stream opened without `?token=` must authenticate (its first message) within
    #: this many seconds; one address may have this many such streams waiting at once.
    ws_auth_timeout: float = 3.0
    #: A stream's credential is checked again this often (seconds) and at its expiry: a
    #: logout, a revocation or a policy change ends the stream within this time.
    ws_recheck_interval: float = 30.0
    ws_unauthenticated_per_address: int = 8
    log_format: str = "auto"  # auto | console | json
    log_level: str = "info"
    #: Reverse proxies (addresses or networks) whose `X-Forwarded-For` and
    #: `X-Forwarded-Proto` both apps believe; from anyone else the headers are ignored,
    #: so a client cannot choose the address rate limits, policies and the audit see.
    trusted_proxies: list[str] = []
    #: On PostgreSQL, whether `serve` also runs a worker (false: the API only, with
    #: `provisioning worker` processes running the tasks). SQLite always runs one.
    worker: bool = True


class ControlCenterSettings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 9080


class AuthSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Sessions, MFA and rate limits (the control center issues, both apps verify)."""

    #: HMAC key for JWTs; empty means a random key generated once and kept in
    #: `<data_dir>/jwt.key` (mode 0600), shared by both apps on this machine.
    jwt_secret: str = ""
    jwt_algorithm: str = "HS256"
    #: The key the audit chain's HMAC key and the TOTP secrets' encryption key are
    #: derived from (at least 32 bytes); empty means a random key generated once and kept
    #: in `<data_dir>/secrets.key` (mode 0600). Processes with different data dirs that
    #: share a database (and write its audit log) must all set the same one.
    secrets_key: str = ""
    access_token_ttl: float = 3600.0
    refresh_token_ttl: float = 7 * 24 * 3600.0
    #: Roles that must enroll TOTP before they can act.
    mfa_required_roles: list[str] = msgspec.field(default_factory=lambda: ["admin"])
    min_password_length: int = 12
    #: Requests per minute: authentication per IP, general per user, batch per user.
    rate_limit_auth: int = 5
    rate_limit_general: int = 100
    rate_limit_batch: int = 10
    #: Serve /metrics without authentication.
    metrics_open: bool = True
    #: `POST /auth/register`: anyone may create an account (off: 403).
    registration_enabled: bool = False
    #: The roles a registered account gets: `member` runs its own VMs and deployments and
    #: reads nothing else (`member_access_policy`).
    registration_roles: list[str] = msgspec.field(default_factory=lambda: ["member"])
    #: `POST /auth/refresh {"token": <access token>}` (seed 003): the current, unexpired
    #: access token buys the next pair once, never past its session's refresh lifetime.
    #: Off: only refresh tokens renew a session (a leaked access token then dies with its
    #: own expiry).
    refresh_with_access_token: bool = True
    #: At most one password-reset email per account in this many seconds (0: no limit).
    reset_email_interval: float = 60.0
    #: Seconds a password-reset token (`POST /auth/forgot-password`) stays usable.
    reset_token_ttl: float = 3600.0
    #: The link a reset email shows, `{token}` replaced by the token; empty shows the token
    #: and the `POST /auth/reset-password` call instead.
    reset_url: str = ""


class SmtpSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The mail server that password-reset emails go through; no `host`, no email."""

    host: str = ""
    port: int = 587
    #: "starttls" (upgrade after connecting), "tls" (implicit TLS, port 465) or "none".
    security: str = "starttls"
    username: str = ""
    password: str = ""
    #: The From address, `Name <address>` or `address`.
    sender: str = ""
    timeout: float = 30.0


class WebhookEndpoint(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    events: list[str]
    secret: str


class WebhookSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Signed deliveries of log events (seed 003), from a persisted outbox."""

    enabled: bool = False
    endpoints: list[WebhookEndpoint] = []
    timeout: float = 10.0
    max_attempts: int = 8
    initial_delay: float = 2.0
    max_delay: float = 600.0


class RetentionSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Pruning of old events and finished workflows (0 days keeps them forever)."""

    events_days: float = 30.0
    workflows_days: float = 90.0
    #: Seconds between two prunings.
    interval: float = 3600.0
    batch_size: int = 1000


class RetrySettings(msgspec.Struct, forbid_unknown_fields=True):
    """The default retry policy (the seed system's): 3 attempts, exponential, 5 s → 300 s."""

    max_attempts: int = 3
    initial_delay: float = 5.0
    max_delay: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.1  # ± fraction of each delay


class ExecutorSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: Tasks running at once across every workflow.
    global_limit: int = 32
    #: A workflow's `parallel_limit` when it gives none.
    default_parallel_limit: int = 8
    #: Tasks running at once on one provider instance, unless the instance sets
    #: `max_concurrent`.
    provider_limit: int = 16
    #: Per-task timeout when the task gives none (seconds; 0 means none).
    default_timeout: float = 3600.0
    retry: RetrySettings = msgspec.field(default_factory=RetrySettings)
    #: PostgreSQL workers: a claimed task is theirs for `lease` seconds, renewed every
    #: `heartbeat`; another worker retries it once the lease has expired.
    lease: float = 30.0
    heartbeat: float = 5.0
    #: How often an idle worker looks for work if a `NOTIFY` was missed (seconds).
    poll_interval: float = 1.0
    #: Tasks one worker process runs at once (the global limit holds across workers).
    worker_limit: int = 32

    def task_defaults(self) -> TaskDefaults:
        return TaskDefaults(
            max_attempts=self.retry.max_attempts,
            retry_initial_delay=self.retry.initial_delay,
            retry_max_delay=self.retry.max_delay,
            timeout=self.default_timeout or None,
            jitter=self.retry.jitter,
        )


class WorkerSettings(msgspec.Struct, forbid_unknown_fields=True):
    """`provisioning worker`: its own HTTP listener for `/metrics` and `/health`."""

    #: Serve them at all.
    metrics: bool = True
    metrics_host: str = "127.0.0.1"
    #: 0 (the default, so that several workers on a host start as they are): a free
    #: port, printed at start (`metrics  http://127.0.0.1:PORT/`). Set one per worker
    #: for a scraper to find.
    metrics_port: int = 0


class SqliteSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: NORMAL survives a crash of the process (kill -9); FULL also survives power loss.
    synchronous: str = "NORMAL"


class VmSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The VM API (seed 001, docs/vms.md): the provider instance running VMs, and limits."""

    #: A provider instance whose type declares the `vm` kind.
    provider: str = "qemu"
    #: VMs one user who is not an administrator may have (409 QUOTA_EXCEEDED past it).
    quota_per_user: int = 5
    #: vCPUs and MiB of memory all VMs together may have (0: no limit).
    max_total_cpu: int = 0
    max_total_memory: int = 0


class DeploymentSettings(msgspec.Struct, forbid_unknown_fields=True):
    """App deployments (docs/deployments.md) beyond their provider instance's settings."""

    #: Probe every running deployment's replicas on their health check's period and
    #: restart (a workflow) one that fails `failure_threshold` checks in a row.
    health_monitor: bool = True


def _default_providers() -> dict[str, dict[str, Any]]:
    # The seed's cloud names map to the shipped simulated cloud, so every example runs on
    # a fresh machine; pointing them at a real cloud is a change of `type`.
    return {
        "upcloud": {"type": "sim", "latency": 0.2, "seed": 1},
        "aws": {"type": "sim", "latency": 0.2, "seed": 2},
        "local": {"type": "local"},
        # Virtual machines (docs/vms.md); without QEMU installed the VM API answers 503.
        "qemu": {"type": "qemu", "vm_dir": "{data_dir}/vms", "images": "{data_dir}/vm-images"},
    }


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "provisioning")


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    data_dir: str = msgspec.field(default_factory=_default_data_dir)
    #: Empty means the embedded SQLite database `<data_dir>/provisioning.db`.
    database_url: str = ""
    #: Where `infra` directories live: `<workspace_root>/infra/<name>/`.
    workspace_root: str = "."
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    control_center: ControlCenterSettings = msgspec.field(default_factory=ControlCenterSettings)
    executor: ExecutorSettings = msgspec.field(default_factory=ExecutorSettings)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    sqlite: SqliteSettings = msgspec.field(default_factory=SqliteSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    smtp: SmtpSettings = msgspec.field(default_factory=SmtpSettings)
    webhooks: WebhookSettings = msgspec.field(default_factory=WebhookSettings)
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
    providers: dict[str, dict[str, Any]] = msgspec.field(default_factory=_default_providers)
    vms: VmSettings = msgspec.field(default_factory=VmSettings)
    deployments: DeploymentSettings = msgspec.field(default_factory=DeploymentSettings)
    #: The file these settings were read from (set by `load_settings`, not a setting).
    config_file: str = ""

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{Path(self.data_dir).resolve() / 'provisioning.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def proxy_options(self) -> dict[str, Any]:
        """uvicorn's options for forwarding headers: trusted from `trusted_proxies` only
        (uvicorn itself would trust loopback, which local users and tasks share)."""
        trusted = self.server.trusted_proxies
        return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or []}

    @property
    def protected_paths(self) -> tuple[Path, ...]:
        """What commands run on this host must not read: the data directory (keys, the
        embedded database, the attempt log), the configuration file, and the database
        file when it lives elsewhere."""
        paths = [Path(self.data_dir).resolve()]
        if self.config_file:
            paths.append(Path(self.config_file).resolve())
        if self.is_sqlite:
            database = Path(self.resolved_database_url.partition(":///")[2]).resolve()
            if not database.is_relative_to(paths[0]):
                paths.append(database)
        return tuple(paths)

    @property
    def workspace(self) -> Path:
        return Path(self.workspace_root).resolve()


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in CLIENT_VARIABLES:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if not all(path):
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _env_value(raw)
    return tree


def _config_file(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        return Path(explicit)
    if environ.get(ENV_PREFIX + "CONFIG"):
        return Path(environ[ENV_PREFIX + "CONFIG"])
    local = Path("provisioning.toml")
    return local if local.is_file() else None


def load_settings(
    config_file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings; raise `ConfigError` naming the offending key."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path = _config_file(config_file, environ)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
    data = _merge(data, _from_environment(environ))
    if "providers" in data:
        # A configured provider table replaces the defaults one instance at a time.
        data["providers"] = _merge(_default_providers(), data["providers"])
    try:
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    if path is not None:
        settings = msgspec.structs.replace(settings, config_file=str(path.resolve()))
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    ports = {"server": settings.server.port, "control_center": settings.control_center.port}
    for section, port in ports.items():
        if not 0 < port < 65536:
            raise ConfigError(f"{section}.port must be between 1 and 65535, got {port}")
    if not 0 <= settings.worker.metrics_port < 65536:
        raise ConfigError(
            f"worker.metrics_port must be between 0 (a free port) and 65535, "
            f"got {settings.worker.metrics_port}"
        )
    if settings.server.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"server.log_level must be one of {', '.join(LOG_LEVELS)}")
    for proxy in settings.server.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"server.trusted_proxies: '{proxy}' is not an IP address or network"
            ) from None
    for key in (
        "max_body_bytes",
        "max_body_depth",
        "max_body_nodes",
        "max_tasks_per_operation",
        "max_tasks_per_workflow",
    ):
        if getattr(settings.server, key) < 1:
            raise ConfigError(f"server.{key} must be at least 1")
    if settings.server.log_format not in LOG_FORMATS:
        raise ConfigError(f"server.log_format must be one of {', '.join(LOG_FORMATS)}")
    if settings.server.ws_recheck_interval <= 0:
        raise ConfigError("server.ws_recheck_interval must be positive")
    if settings.server.ws_auth_timeout <= 0:
        raise ConfigError("server.ws_auth_timeout must be positive")
    if settings.server.ws_unauthenticated_per_address < 1:
        raise ConfigError("server.ws_unauthenticated_per_address must be at least 1")
    ex = settings.executor
    for key in ("global_limit", "default_parallel_limit", "provider_limit", "worker_limit"):
        if getattr(ex, key) < 1:
            raise ConfigError(f"executor.{key} must be at least 1")
    if ex.default_parallel_limit > MAX_PARALLEL_LIMIT:
        raise ConfigError(
            f"executor.default_parallel_limit must be at most {MAX_PARALLEL_LIMIT}, the bound "
            "of every workflow's parallel_limit"
        )
    if not 0 < ex.heartbeat < ex.lease:
        raise ConfigError("executor.heartbeat must be positive and shorter than executor.lease")
    if ex.poll_interval <= 0:
        raise ConfigError("executor.poll_interval must be positive")
    if not settings.server.worker and settings.is_sqlite:
        raise ConfigError(
            "server.worker = false needs PostgreSQL: the embedded SQLite database is run by "
            "the serve process's own executor (set database_url to use separate workers)"
        )
    if not 0 < settings.server.idempotency_pending_ttl <= settings.server.idempotency_ttl:
        raise ConfigError(
            "server.idempotency_pending_ttl must be positive and at most server.idempotency_ttl"
        )
    if ex.retry.max_attempts < 1:
        raise ConfigError("executor.retry.max_attempts must be at least 1")
    if settings.sqlite.synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise ConfigError("sqlite.synchronous must be one of OFF, NORMAL, FULL, EXTRA")
    _validate_webhooks(settings.webhooks)
    if settings.smtp.security not in {"starttls", "tls", "none"}:
        raise ConfigError('smtp.security must be one of "starttls", "tls", "none"')
    if settings.smtp.host and not settings.smtp.sender:
        raise ConfigError("smtp.sender (the From address) is needed with smtp.host")
    if settings.auth.reset_token_ttl <= 0:
        raise ConfigError("auth.reset_token_ttl must be positive")
    if settings.auth.reset_url and "{token}" not in settings.auth.reset_url:
        raise ConfigError("auth.reset_url must contain {token}")
    for key in ("quota_per_user", "max_total_cpu", "max_total_memory"):
        if getattr(settings.vms, key) < 0:
            raise ConfigError(f"vms.{key} must be 0 or more")
    for name, table in settings.providers.items():
        if not isinstance(table, dict) or "type" not in table:
            raise ConfigError(f'providers.{name} needs a `type` (for example type = "sim")')


def _validate_webhooks(webhooks: WebhookSettings) -> None:
    for index, endpoint in enumerate(webhooks.endpoints):
        where = f"webhooks.endpoints[{index}]"
        if not endpoint.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url must start with http:// or https://")
        if not endpoint.secret:
            raise ConfigError(f"{where}.secret must not be empty (it signs every delivery)")
        unknown = sorted(set(endpoint.events) - set(EVENT_NAMES) - {"*"})
        if unknown or not endpoint.events:
            raise ConfigError(
                f"{where}.events: unknown {unknown or 'empty list'}; known: "
                f'{", ".join(EVENT_NAMES)} (or "*")'
            )
    if webhooks.max_attempts < 1:
        raise ConfigError("webhooks.max_attempts must be at least 1")
