"""`provisioning vm …`: seed 001's VMs from the command line (`/vms`, docs/vms.md).

`list`, `create`, `get`, `start`, `stop`, `restart`, `force-stop`, `delete` call the VM
API through the client's `vms` section (`--wait` holds each until its workflow ended);
`console` attaches this terminal to a VM's serial console over its WebSocket (Ctrl-]
detaches).
"""

from __future__ import annotations

import contextlib
import os
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from typing import Any

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
)
from orchestrator.cli.tables import status_text

DETACH = b"\x1d"  # Ctrl-]


@click.group()
def vm() -> None:
    """Virtual machines (seed 001): list, create, start, stop, console…"""


def _show(options: Options, found: dict[str, Any]) -> None:
    if options.json:
        print_json(found)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, value in found.items():
        shown = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        grid.add_row(key, status_text(value) if key == "status" else shown)
    stdout.print(grid)


@vm.command("list")
@click.option("--status", help="Only VMs in this status (running, stopped, …).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@json_option
@pass_options
def list_vms(options: Options, status: str | None, limit: int, offset: int) -> None:
    """Your VMs (an administrator's: all), oldest first."""
    with options.client() as client:
        found = client.vms.list(status, limit=limit, offset=offset)
    if options.json:
        print_json(found)
        return
    if not found:
        click.echo("no virtual machines")
        return
    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "status", "cpu", "memory", "disk", "os"):
        table.add_column(column, no_wrap=True)
    for row in found:
        table.add_row(
            row["id"],
            row["name"],
            status_text(row["status"]),
            str(row["cpu"]),
            f"{row['memory']} MiB",
            f"{row['disk']} GiB",
            row["os"],
        )
    stdout.print(table)


@vm.command("create")
@click.argument("name")
@click.option("--cpu", type=int, default=1, show_default=True)
@click.option("--memory", type=int, default=512, show_default=True, help="MiB.")
@click.option("--disk", type=int, default=10, show_default=True, help="GiB.")
@click.option("--os", "image", default="none", show_default=True, help="A base image.")
@click.option("--wait", is_flag=True, help="Return once the VM runs (or its create failed).")
@json_option
@pass_options
def create(
    options: Options, name: str, cpu: int, memory: int, disk: int, image: str, wait: bool
) -> None:
    """Create a VM called NAME and start it."""
    body = {"name": name, "cpu": cpu, "memory": memory, "disk": disk, "os": image}
    with options.client() as client:
        _show(options, client.vms.create(body, wait=wait))


@vm.command("get")
@click.argument("vm_id", metavar="ID")
@json_option
@pass_options
def get(options: Options, vm_id: str) -> None:
    """Show a VM."""
    with options.client() as client:
        _show(options, client.vms.get(vm_id))


#: The actions that lose something (a disk, a clean shutdown): asked for unless --yes.
_DESTRUCTIVE = {
    "force-stop": "end VM {} at once, without a clean shutdown?",
    "delete": "delete VM {} and its disk?",
}


def _action(name: str, summary: str) -> None:
    @vm.command(name, help=summary)
    @click.argument("vm_id", metavar="ID")
    @click.option("--wait", is_flag=True, help="Return once its workflow ended.")
    @click.option(
        "--yes", "-y", is_flag=True, hidden=name not in _DESTRUCTIVE, help="Do it without asking."
    )
    @json_option
    @pass_options
    def act(options: Options, vm_id: str, wait: bool, yes: bool) -> None:
        if name in _DESTRUCTIVE:
            confirm(yes, _DESTRUCTIVE[name].format(vm_id))
        with options.client() as client:
            section = client.vms
            call = {
                "start": section.start,
                "stop": section.stop,
                "restart": section.restart,
                "force-stop": section.force_stop,
                "delete": section.delete,
            }[name]
            _show(options, call(vm_id, wait=wait))


_action("start", "Start a stopped VM.")
_action("stop", "Stop a VM: ACPI power-off, then a hard stop after the grace.")
_action("restart", "Restart a running VM.")
_action("force-stop", "End a VM at once.")
_action("delete", "Delete a VM and its disk.")


@vm.command("console")
@click.argument("vm_id", metavar="ID")
@pass_options
def console(options: Options, vm_id: str) -> None:
    """Attach this terminal to a VM's serial console (Ctrl-] detaches)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    base = options.base_url().rstrip("/")
    url = "ws" + base.removeprefix("http") + f"/vms/{vm_id}/console"
    token = options.bearer()
    try:
        socket = connect(url, open_timeout=30)
    except (OSError, TimeoutError) as exc:
        raise Failure(f"cannot reach the console at {url}: {exc}") from exc
    with socket:
        socket.send(msgspec.json.encode({"type": "auth", "token": token or ""}).decode())
        with _raw_terminal():
            if sys.stdin.isatty():  # (once raw: a Ctrl-] typed on seeing it is taken)
                click.echo("connected; Ctrl-] detaches\r", err=True)
            threading.Thread(target=_type_into, args=(socket,), daemon=True).start()
            out = sys.stdout.buffer
            try:
                for message in socket:
                    if isinstance(message, str):
                        _refused(message)
                    else:
                        out.write(message)
                    out.flush()
            except ConnectionClosed:
                pass


def _type_into(socket: Any) -> None:
    """Send what is typed (stdin) until Ctrl-] or its end; then close the socket."""
    try:
        while chunk := os.read(sys.stdin.fileno(), 1024):
            if DETACH in chunk:
                chunk = chunk.split(DETACH, 1)[0]
                if chunk:
                    socket.send(chunk)
                break
            socket.send(chunk)
    except Exception:  # noqa: S110 - the socket closed under us: nothing left to send
        pass
    socket.close()


def _refused(message: str) -> None:
    try:
        error = msgspec.json.decode(message)
    except msgspec.DecodeError:
        error = {"error": message}
    code = error.get("code", "")
    if code == "VM_STOPPED":
        click.echo("\r\n[the virtual machine stopped]", err=True)
        return
    raise Failure(f"{error.get('error', message)} ({code})")


@contextlib.contextmanager
def _raw_terminal() -> Iterator[None]:
    """The terminal in raw mode while attached (each key goes to the guest as typed)."""
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # (not TCSAFLUSH: what was typed already is kept)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
