"""`provisioning host …`: the orchestrator's host through seed 000's endpoints
(`docs/host.md`).

- `network list|up|down|address-add|address-remove`
- `storage disks|format|mount|unmount`
- `users list|create|reset-password|delete` (passwords are prompted for, or read from
  standard input with `--password-stdin`: never an argument)
- `system [summary|cpu|memory]`
- `logs [--service …] [--priority …] [--since …] [--until …] [--page …] [--page-size …]`
- `terminal [--shell …]`: an interactive shell over `/ws/terminal` (raw mode, the window's
  size followed, the terminal restored on exit; Ctrl-] detaches)

A change prints its workflow id (`--wait` follows it as `workflow wait` does; `--check`
runs it in check mode). `--instance` names the host instance where several are
configured.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
import msgspec
from rich.table import Table

from orchestrator.cli.common import (
    Failure,
    Options,
    confirm,
    json_option,
    pass_options,
    print_json,
    stdout,
    yes_option,
)
from orchestrator.cli.workflows import submitted
from orchestrator.client import OrchestratorClient

F = TypeVar("F", bound=Callable[..., Any])


def _instance_query(ctx: click.Context) -> dict[str, Any]:
    instance = ctx.find_root().meta.get("host_instance")
    return {"instance": instance} if instance else {}


def _call(
    client: OrchestratorClient,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    json: Any = None,
) -> Any:
    # The client's one way to reach an endpoint and decode the envelope (errors become
    # `ApiError`, shown as one line by the CLI).
    query = {**(params or {}), **_instance_query(click.get_current_context())}
    return client._call(method, path, Any, params=query, json=json)


def change_options(command: F) -> F:
    command = click.option("--check", is_flag=True, help="Check mode: say, change nothing.")(
        command
    )
    return click.option("--wait", is_flag=True, help="Follow the workflow until it ends.")(command)


def _changed(options: Options, client: OrchestratorClient, answer: Any, wait: bool) -> None:
    workflow_id = str(answer["workflow_id"])
    if options.json and not wait:
        print_json(answer)
        return
    submitted(options, client, workflow_id, wait)


def _grid(values: dict[str, Any]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, value in values.items():
        shown = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        grid.add_row(key, shown)
    stdout.print(grid)


@click.group()
@click.option("--instance", help="The host provider instance (where several are configured).")
@click.pass_context
def host(ctx: click.Context, instance: str | None) -> None:
    """The orchestrator's host: network, storage, users, system, logs, terminal."""
    ctx.find_root().meta["host_instance"] = instance


# -- network ------------------------------------------------------------------------------


@host.group()
def network() -> None:
    """Network interfaces."""


@network.command("list")
@json_option
@pass_options
def network_list(options: Options) -> None:
    """Interfaces with their state, addresses and counters."""
    with options.client() as client:
        found = _call(client, "GET", "/network/interfaces")["interfaces"]
    if options.json:
        print_json(found)
        return
    table = Table(box=None, header_style="bold")
    for column in ("name", "state", "type", "mac", "mtu", "addresses", "rx bytes", "tx bytes"):
        table.add_column(column)
    for i in found:
        stats = i["statistics"]
        table.add_row(
            i["name"],
            i["state"],
            i["type"],
            i["mac"] or "-",
            str(i["mtu"]),
            ", ".join(i["addresses"]) or "-",
            str(stats["rx_bytes"]),
            str(stats["tx_bytes"]),
        )
    stdout.print(table)


def _state(name: str, state: str, check: bool, wait: bool, options: Options) -> None:
    with options.client() as client:
        query = {"check_mode": check or None}
        answer = _call(client, "PUT", f"/network/interfaces/{name}/{state}", params=query)
        _changed(options, client, answer, wait)


@network.command("up")
@click.argument("name")
@change_options
@json_option
@pass_options
def network_up(options: Options, name: str, check: bool, wait: bool) -> None:
    """Bring interface NAME up."""
    _state(name, "up", check, wait, options)


@network.command("down")
@click.argument("name")
@change_options
@json_option
@pass_options
def network_down(options: Options, name: str, check: bool, wait: bool) -> None:
    """Bring interface NAME down."""
    _state(name, "down", check, wait, options)


def _split(address: str) -> tuple[str, str]:
    ip, slash, prefix = address.partition("/")
    if not slash or not prefix:
        raise click.BadParameter(f"{address!r}: give ADDRESS/PREFIX (10.0.0.2/24)")
    return ip, prefix


@network.command("address-add")
@click.argument("name")
@click.argument("address", metavar="ADDRESS/PREFIX")
@click.option("--gateway", help="Also a default route through this gateway.")
@change_options
@json_option
@pass_options
def address_add(
    options: Options, name: str, address: str, gateway: str | None, check: bool, wait: bool
) -> None:
    """Add ADDRESS/PREFIX to interface NAME."""
    ip, prefix = _split(address)
    netmask: int | str = int(prefix) if prefix.isdigit() else prefix
    body = {"address": ip, "netmask": netmask, "gateway": gateway, "check_mode": check}
    with options.client() as client:
        answer = _call(client, "POST", f"/network/interfaces/{name}/address", json=body)
        _changed(options, client, answer, wait)


@network.command("address-remove")
@click.argument("name")
@click.argument("address", metavar="ADDRESS/PREFIX")
@click.option("--gateway", help="Also remove the default route through this gateway.")
@change_options
@json_option
@pass_options
def address_remove(
    options: Options, name: str, address: str, gateway: str | None, check: bool, wait: bool
) -> None:
    """Remove ADDRESS/PREFIX from interface NAME."""
    ip, prefix = _split(address)
    query = {"address": ip, "netmask": prefix, "gateway": gateway, "check_mode": check or None}
    with options.client() as client:
        answer = _call(client, "DELETE", f"/network/interfaces/{name}/address", params=query)
        _changed(options, client, answer, wait)


# -- storage ------------------------------------------------------------------------------


@host.group()
def storage() -> None:
    """Disks, filesystems and mounts."""


@storage.command("disks")
@json_option
@pass_options
def storage_disks(options: Options) -> None:
    """Disks and their partitions."""
    with options.client() as client:
        found = _call(client, "GET", "/storage/disks")["disks"]
    if options.json:
        print_json(found)
        return
    table = Table(box=None, header_style="bold")
    for column in ("path", "size", "type", "filesystem", "label", "mount point", "model"):
        table.add_column(column)
    for disk in found:
        for item in (disk, *disk["partitions"]):
            table.add_row(
                item["path"],
                str(item["size"]),
                item.get("type") or "-",
                item["filesystem"] or "-",
                item["label"] or "-",
                item["mount_point"] or "-",
                disk.get("model") or "-" if item is disk else "",
            )
    stdout.print(table)


def _storage(options: Options, operation: str, body: dict[str, Any], wait: bool) -> None:
    with options.client() as client:
        answer = _call(client, "POST", f"/storage/{operation}", json=body)
        _changed(options, client, answer, wait)


@storage.command("format")
@click.argument("device")
@click.option("--filesystem", default="ext4", show_default=True)
@click.option("--label")
@change_options
@yes_option
@json_option
@pass_options
def storage_format(
    options: Options,
    device: str,
    filesystem: str,
    label: str | None,
    check: bool,
    wait: bool,
    yes: bool,
) -> None:
    """Make a filesystem on DEVICE (irreversible; allow-listed devices only)."""
    confirm(yes or check, f"make a {filesystem} filesystem on {device}, erasing what it holds?")
    body = {"device": device, "filesystem": filesystem, "label": label, "check_mode": check}
    _storage(options, "format", body, wait)


@storage.command("mount")
@click.argument("device")
@click.argument("mount_point")
@click.option("--filesystem")
@click.option("--options", "mount_options", help="Comma-separated (rw,noatime).")
@change_options
@json_option
@pass_options
def storage_mount(
    options: Options,
    device: str,
    mount_point: str,
    filesystem: str | None,
    mount_options: str | None,
    check: bool,
    wait: bool,
) -> None:
    """Mount DEVICE at MOUNT_POINT (under the instance's mount root)."""
    body = {
        "device": device,
        "mount_point": mount_point,
        "filesystem": filesystem,
        "options": mount_options,
        "check_mode": check,
    }
    _storage(options, "mount", body, wait)


@storage.command("unmount")
@click.argument("device")
@click.option("--mount-point")
@change_options
@json_option
@pass_options
def storage_unmount(
    options: Options, device: str, mount_point: str | None, check: bool, wait: bool
) -> None:
    """Unmount DEVICE."""
    body = {"device": device, "mount_point": mount_point, "check_mode": check}
    _storage(options, "unmount", body, wait)


# -- users --------------------------------------------------------------------------------


@host.group()
def users() -> None:
    """The host's Linux accounts."""


@users.command("list")
@json_option
@pass_options
def users_list(options: Options) -> None:
    """Accounts (system ones marked)."""
    with options.client() as client:
        found = _call(client, "GET", "/host/users")["users"]
    if options.json:
        print_json(found)
        return
    table = Table(box=None, header_style="bold")
    for column in ("username", "uid", "gid", "home", "shell", "system"):
        table.add_column(column)
    for user in found:
        table.add_row(
            user["username"],
            user["uid"],
            user["gid"],
            user["home"],
            user["shell"],
            "yes" if user["system"] else "",
        )
    stdout.print(table)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    value: str = click.prompt("password", hide_input=True, confirmation_prompt=True)
    return value


@users.command("create")
@click.argument("username")
@click.option("--groups", default="", help="Supplementary groups, comma-separated.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@change_options
@json_option
@pass_options
def users_create(
    options: Options, username: str, groups: str, password_stdin: bool, check: bool, wait: bool
) -> None:
    """Add the account USERNAME."""
    body = {
        "username": username,
        "password": _password(password_stdin),
        "groups": groups,
        "check_mode": check,
    }
    with options.client() as client:
        _changed(options, client, _call(client, "POST", "/host/users", json=body), wait)


@users.command("reset-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@change_options
@json_option
@pass_options
def users_reset(
    options: Options, username: str, password_stdin: bool, check: bool, wait: bool
) -> None:
    """Set the password of USERNAME."""
    body = {"password": _password(password_stdin), "check_mode": check}
    with options.client() as client:
        answer = _call(client, "POST", f"/host/users/{username}/reset-password", json=body)
        _changed(options, client, answer, wait)


@users.command("delete")
@click.argument("username")
@change_options
@yes_option
@json_option
@pass_options
def users_delete(options: Options, username: str, check: bool, wait: bool, yes: bool) -> None:
    """Remove the account USERNAME and its home."""
    confirm(yes or check, f"remove the host account {username} and its home?")
    with options.client() as client:
        query = {"check_mode": check or None}
        answer = _call(client, "DELETE", f"/host/users/{username}", params=query)
        _changed(options, client, answer, wait)


# -- system and logs ----------------------------------------------------------------------


@host.command("system")
@click.argument("what", type=click.Choice(["summary", "cpu", "memory"]), default="summary")
@json_option
@pass_options
def system(options: Options, what: str) -> None:
    """The host's identity and load."""
    with options.client() as client:
        found = _call(client, "GET", f"/system/{what}")
    if options.json:
        print_json(found)
        return
    _grid(found)


@host.command("logs")
@click.option("--service", help="A unit (sshd).")
@click.option(
    "--priority",
    type=click.Choice(
        ["emergency", "alert", "critical", "error", "warning", "notice", "info", "debug"]
    ),
    help="This priority and the more severe ones.",
)
@click.option("--since", help="ISO 8601 time.")
@click.option("--until", help="ISO 8601 time.")
@click.option("--page", type=int, default=1, show_default=True)
@click.option("--page-size", type=int, default=100, show_default=True)
@json_option
@pass_options
def logs(
    options: Options,
    service: str | None,
    priority: str | None,
    since: str | None,
    until: str | None,
    page: int,
    page_size: int,
) -> None:
    """Journal entries, newest first."""
    query = {
        "service": service,
        "priority": priority,
        "since": since,
        "until": until,
        "page": page,
        "page_size": page_size,
    }
    with options.client() as client:
        found = _call(client, "GET", "/logs", params={k: v for k, v in query.items() if v})
    if options.json:
        print_json(found)
        return
    table = Table(box=None, header_style="bold")
    for column in ("timestamp", "priority", "unit", "pid", "message"):
        table.add_column(column, no_wrap=column != "message")
    for entry in found["logs"]:
        table.add_row(
            entry["timestamp"],
            entry["priority"] or "-",
            entry["unit"] or "-",
            str(entry["pid"] or "-"),
            entry["message"],
        )
    stdout.print(table)
    click.echo(f"page {found['page']}: {len(found['logs'])} of {found['total_count']} entries")


# -- terminal -----------------------------------------------------------------------------

DETACH = b"\x1d"  # Ctrl-]


@host.command("terminal")
@click.option("--shell", help="A login shell of the host (/etc/shells); default: the configured.")
@pass_options
def terminal(options: Options, shell: str | None) -> None:
    """A shell on the host, over /ws/terminal (administrators with MFA; off unless the
    host instance's terminal.enabled). Ctrl-] detaches; the command exits with the
    shell's status. Standard input that is not a terminal is typed in, then Ctrl-D."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    base = options.base_url().rstrip("/").removesuffix("/api/v1")
    instance = click.get_current_context().find_root().meta.get("host_instance")
    url = "ws" + base.removeprefix("http") + "/ws/terminal"
    if instance:
        url += f"?instance={instance}"
    # The first message must follow the handshake within server.ws_auth_timeout: all
    # that it needs is ready before.
    auth = msgspec.json.encode({"type": "auth", "payload": {"token": options.bearer()}})
    payload: dict[str, Any] = {**_size(), **({"shell": shell} if shell else {})}
    subscribe = msgspec.json.encode({"type": "subscribe", "payload": payload})
    try:
        socket = connect(url, open_timeout=30)
    except InvalidStatus as exc:
        raise Failure(_denial(exc.response.status_code, exc.response.body)) from None
    except (OSError, TimeoutError) as exc:
        raise Failure(f"cannot reach the terminal at {url}: {exc}") from exc
    status: int | None = None
    with socket:
        socket.send(auth.decode())
        socket.send(subscribe.decode())
        with _raw_terminal(socket):
            if sys.stdin.isatty():  # (once raw: a Ctrl-] typed on seeing it is taken)
                click.echo("connected to the host's shell; Ctrl-] detaches\r", err=True)
            threading.Thread(target=_type_into, args=(socket,), daemon=True).start()
            out = sys.stdout.buffer
            try:
                for raw in socket:
                    message = msgspec.json.decode(raw)
                    kind = message.get("type")
                    if kind == "output":
                        out.write(str(message.get("data", "")).encode())
                        out.flush()
                    elif kind == "exit":
                        status = int(message.get("code") or 0)
                    elif kind == "error":
                        error = f"{message.get('error')} ({message.get('code')})"
                        if message.get("code") != "INVALID_INPUT":
                            raise Failure(error)
                        click.echo(f"\r\n[{error}]\r", err=True)
            except ConnectionClosed:
                pass
    if status is None:
        click.echo("\r\n[detached]", err=True)
    sys.exit(0 if status is None else (status if status >= 0 else 128 - status))


def _denial(status: int, body: bytes | bytearray | None) -> str:
    try:
        error = msgspec.json.decode(body or b"{}")
        return f"{error['error']} ({error['code']})"
    except (msgspec.DecodeError, KeyError, TypeError):
        return f"the terminal was refused: HTTP {status}"


def _size() -> dict[str, int]:
    try:
        found = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return {"cols": 80, "rows": 24}
    return {"cols": max(1, found.columns), "rows": max(1, found.lines)}


def _type_into(socket: Any) -> None:
    """Send what is typed until Ctrl-] (then close) or the end of standard input (then
    Ctrl-D, so the shell ends as it would at a terminal)."""
    try:
        while chunk := os.read(sys.stdin.fileno(), 4096):
            if DETACH in chunk:
                before = chunk.split(DETACH, 1)[0]
                if before:
                    _send_input(socket, before)
                socket.close()
                return
            _send_input(socket, chunk)
        _send_input(socket, b"\x04")
    except Exception:  # noqa: S110 - the socket closed under us: nothing left to send
        pass


def _send_input(socket: Any, data: bytes) -> None:
    message = {"type": "input", "data": data.decode(errors="replace")}
    socket.send(msgspec.json.encode(message).decode())


@contextlib.contextmanager
def _raw_terminal(socket: Any) -> Iterator[None]:
    """Raw mode while attached (each key goes to the shell as typed) and the window's
    size followed (SIGWINCH); the terminal as it was afterwards, whatever happens."""
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def resized(signum: int, frame: Any) -> None:
        with contextlib.suppress(Exception):
            socket.send(msgspec.json.encode({"type": "resize", "payload": _size()}).decode())

    before = signal.signal(signal.SIGWINCH, resized)
    tty.setraw(fd, termios.TCSANOW)  # (not TCSAFLUSH: what was typed already is kept)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, before)
