"""One VM: its directory, what is written there, and its QEMU process.

`<vm_dir>/<id>/` holds `vm.json`, the definition (its presence is the VM's existence);
`disk.qcow2`, an overlay of the base image or a blank disk; `run.json`, the QEMU process
while it runs (pid, start time, boot id); `state.json`, the last failure to start (the
`error` status until a start succeeds); the sockets QEMU listens on, `qmp.sock` (the
monitor) and `serial.sock` (the serial console); `serial.log`, all the guest wrote to
its console; `qemu.pid` and `qemu.log`, QEMU's pid file and what it printed starting;
`sercon-port`, the UART port SeaBIOS writes its own messages to (its serial console).

QEMU is started with `-daemonize` from a session of its own: it is never the
orchestrator's child, and outlives it. Its sockets are bound with paths relative to the
VM's directory (QEMU is started there), so a deep data directory does not overflow the
107 bytes of a socket path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import msgspec

from providers.base import ProviderError
from providers.qemu import _process
from providers.qemu._config import QemuConfig
from providers.qemu._images import Image
from providers.qemu._monitor import MonitorError, execute

T = TypeVar("T")

DISK, DEFINITION, RUN, STATE = "disk.qcow2", "vm.json", "run.json", "state.json"
QMP, SERIAL, SERIAL_LOG, PID, LOG = "qmp.sock", "serial.sock", "serial.log", "qemu.pid", "qemu.log"
#: SeaBIOS's serial console (`etc/sercon-port`: the UART's I/O port, a little-endian
#: integer): without a display the firmware's own messages ("No bootable device.") reach
#: the serial console, so a guest that boots nothing still shows why.
SERCON, SERCON_PORT = "sercon-port", (0x3F8).to_bytes(2, "little")
#: Seconds between two presses of the power button during a graceful stop.
POWERDOWN_EVERY = 10.0


class Definition(msgspec.Struct, kw_only=True):
    id: str
    name: str
    cpu: int
    memory: int
    disk: int
    os: str
    owner: str = ""
    created_at: str = ""


class Running(msgspec.Struct, kw_only=True):
    pid: int
    ticks: int
    boot: str = ""
    started_at: str = ""
    #: The loopback port forwarded to the guest's port 22 (network = "user").
    ssh_port: int | None = None


class State(msgspec.Struct, kw_only=True):
    error: str | None = None


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Machine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.id = root.name

    def path(self, name: str) -> Path:
        return self.root / name

    # -- files ----------------------------------------------------------------------

    def definition(self) -> Definition | None:
        return _read(self.path(DEFINITION), Definition)

    def define(self, definition: Definition) -> None:
        _write(self.path(DEFINITION), definition)

    def state(self) -> State:
        return _read(self.path(STATE), State) or State()

    def set_error(self, error: str | None) -> None:
        if error is None:
            self.path(STATE).unlink(missing_ok=True)
        else:
            _write(self.path(STATE), State(error=error))

    def running(self) -> Running | None:
        """The VM's QEMU process, if it runs (the recorded pid and start time match a
        live process). A QEMU started but not yet recorded (its starter died in between)
        is found from its pid file and adopted."""
        recorded = _read(self.path(RUN), Running)
        if (
            recorded is not None
            and recorded.boot in ("", _process.boot_id())
            and _process.is_alive(recorded.pid, recorded.ticks)
        ):
            return recorded
        try:
            pid = int(self.path(PID).read_text().strip())
        except (OSError, ValueError):
            return None
        ticks = _process.start_ticks(pid)
        if ticks is None or f"guest={self.id}" not in _process.command_line(pid):
            return None
        adopted = Running(pid=pid, ticks=ticks, boot=_process.boot_id(), started_at=now())
        _write(self.path(RUN), adopted)
        return adopted

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the process ----------------------------------------------------------------

    async def launch(self, config: QemuConfig, accel: str, image: Image) -> Running:
        """Start QEMU; return once its monitor answers that the guest runs."""
        definition = self.definition()
        assert definition is not None
        for name in (QMP, SERIAL, PID, RUN):
            self.path(name).unlink(missing_ok=True)
        ssh_port = _free_port() if config.network == "user" else None
        self.path(SERCON).write_bytes(SERCON_PORT)
        argv = command(config, accel, definition, image, ssh_port)
        with self.path(LOG).open("wb") as log:
            starter = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.root,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            async with asyncio.timeout(config.start_timeout):
                code = await starter.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(starter.pid, 9)
            await starter.wait()
            await self._kill_leftover()
            raise ProviderError(f"QEMU did not start within {config.start_timeout} s") from None
        if code != 0:
            output = self.path(LOG).read_text(errors="replace").strip()
            raise ProviderError(f"QEMU exited with status {code}: {output[-2000:]}")
        running = self.running()
        if running is None:
            raise ProviderError("QEMU started but its process is gone (see qemu.log)")
        running.ssh_port = ssh_port
        _write(self.path(RUN), running)
        try:
            status = await execute(self.path(QMP), "query-status", config.start_timeout)
        except MonitorError as exc:
            await self.kill(running)
            raise ProviderError(f"QEMU started but its monitor does not answer: {exc}") from exc
        if not status.get("running"):
            await self.kill(running)
            raise ProviderError(f"QEMU started but the guest is {status.get('status')}")
        return running

    async def shut_down(self, running: Running, grace: float) -> None:
        """ACPI power-off (the guest shuts itself down), a hard stop after `grace` s.

        The power button is pressed again every `POWERDOWN_EVERY` seconds while the
        grace lasts: a guest that was not listening yet (still booting, its ACPI daemon
        not started) misses a press, as a machine's OS misses one during its boot."""
        deadline = time.monotonic() + grace
        with contextlib.suppress(MonitorError):
            while (left := deadline - time.monotonic()) > 0:
                await execute(self.path(QMP), "system_powerdown")
                if await _process.wait_gone(running.pid, running.ticks, min(left, POWERDOWN_EVERY)):
                    self._stopped()
                    return
        await self.kill(running)

    async def kill(self, running: Running) -> None:
        """End QEMU at once: `quit` through its monitor, SIGKILL if that fails."""
        with contextlib.suppress(MonitorError):
            await execute(self.path(QMP), "quit", patience=5.0)
        if not await _process.wait_gone(running.pid, running.ticks, 5.0):
            _process.kill(running.pid, running.ticks)
            if not await _process.wait_gone(running.pid, running.ticks, 30.0):
                raise ProviderError(f"QEMU (pid {running.pid}) survives SIGKILL")
        self._stopped()

    def _stopped(self) -> None:
        for name in (RUN, QMP, SERIAL, PID):
            self.path(name).unlink(missing_ok=True)

    async def _kill_leftover(self) -> None:
        running = self.running()
        if running is not None:
            await self.kill(running)


def command(
    config: QemuConfig, accel: str, definition: Definition, image: Image, ssh_port: int | None
) -> list[str]:
    """QEMU's argument list, run in the VM's directory (paths relative to it)."""
    argv = [
        config.binary,
        "-name",
        f"guest={definition.id}",
        "-machine",
        f"{config.machine},accel={accel}",
        *(["-cpu", "host"] if accel == "kvm" else []),
        "-smp",
        str(definition.cpu),
        "-m",
        str(definition.memory),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-daemonize",
        "-pidfile",
        PID,
        "-chardev",
        f"socket,id=serial0,path={SERIAL},server=on,wait=off,logfile={SERIAL_LOG},logappend=on",
        "-serial",
        "chardev:serial0",
        "-fw_cfg",
        f"name=etc/sercon-port,file={SERCON}",
        "-chardev",
        f"socket,id=qmp,path={QMP},server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
        "-drive",
        f"file={DISK},if=virtio,format=qcow2",
    ]
    if config.sandbox:
        argv += ["-sandbox", "on,obsolete=deny,resourcecontrol=deny"]
    if image.kernel is not None:
        argv += ["-kernel", str(image.kernel)]
        if image.initrd is not None:
            argv += ["-initrd", str(image.initrd)]
        if image.cmdline:
            argv += ["-append", image.cmdline]
    if ssh_port is None:
        argv += ["-nic", "none"]
    else:
        argv += [
            "-nic",
            f"user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        ]
    return argv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read(path: Path, kind: type[T]) -> T | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except (OSError, msgspec.DecodeError):
        return None


def _write(path: Path, value: msgspec.Struct) -> None:
    """Whole or not at all: a crash leaves the old file or the new one."""
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(msgspec.json.encode(value))
    os.replace(partial, path)
