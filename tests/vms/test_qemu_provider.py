"""The `qemu` provider alone (no orchestrator): its checks, its disks, a real guest's life."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from providers.base import (
    ActionCall,
    InvalidParams,
    PermanentProviderError,
    ProviderConfigError,
    ResourceNotFound,
)
from providers.qemu import QemuProvider
from providers.qemu._machine import Machine
from providers.qemu._process import start_ticks
from tests.vms import guest

pytestmark = pytest.mark.backend_independent


class NoInventory:
    async def get(self, kind: str, name: str) -> None:
        return None

    async def list(self, kind: str) -> list[Any]:
        return []


def call(action: str, **params: Any) -> ActionCall:
    return ActionCall(
        task_id="t1",
        workflow_id="w1",
        instance="qemu",
        action=action,
        params=params,
        attempt=1,
        timeout=None,
        workspace=Path("/nonexistent"),
        inventory=NoInventory(),
    )


def provider(tmp_path: Path, images: Path | None = None, **config: Any) -> QemuProvider:
    table = {"vm_dir": str(tmp_path / "vms"), "max_cpu": 4, "max_memory": 4096, **config}
    if images is not None:
        table["images"] = str(images)
    return QemuProvider("qemu", table)


def test_a_bad_configuration_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ProviderConfigError, match="accel"):
        provider(tmp_path, accel="hvf")
    with pytest.raises(ProviderConfigError, match="unknown field `colour`"):
        provider(tmp_path, colour="red")
    with pytest.raises(ProviderConfigError, match="vm_dir"):
        QemuProvider("qemu", {"vm_dir": "relative/vms"})


def test_params_beyond_the_hosts_limits_or_images_are_refused(tmp_path):
    qemu = provider(tmp_path)
    ok = {"id": "vm-1", "name": "web", "cpu": 2, "memory": 512, "disk": 1}
    qemu.validate("vm", "create", ok)
    cases = {
        "cpu": ({"cpu": 5}, "at most 4 vCPUs on this host"),
        "memory": ({"memory": 8192}, "at most 4096 MiB on this host"),
        "disk": ({"disk": 5000}, "at most 1024 GiB on this host"),
        "os": ({"os": "ubuntu20.04"}, "unknown image 'ubuntu20.04'; available: none"),
    }
    for field, (change, message) in cases.items():
        with pytest.raises(InvalidParams) as refused:
            qemu.validate("vm", "create", {**ok, **change})
        assert (refused.value.path, refused.value.message) == (field, message)
    for bad in ({"cpu": -1}, {"memory": 0}, {"disk": 0}, {"name": "a/b"}, {"name": "a\x00b"}):
        with pytest.raises(InvalidParams) as refused:
            qemu.validate("vm", "create", {**ok, **bad})
        assert refused.value.path == next(iter(bad))
    with pytest.raises(InvalidParams, match="unknown field"):
        qemu.validate("vm", "create", {**ok, "colour": "red"})
    with pytest.raises(InvalidParams) as refused:
        qemu.validate("vm", "start", {"id": "../etc"})
    assert refused.value.path == "id"


def test_an_image_directory_lists_disks_and_kernels(tmp_path):
    images = tmp_path / "images"
    (images / "tiny").mkdir(parents=True)
    (images / "tiny" / "vmlinuz").write_bytes(b"kernel")
    (images / "not an image").mkdir()
    (images / "notes.txt").write_text("x")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "deb.qcow2"), "3G"])
    qemu = provider(tmp_path, images)
    assert qemu.image_names() == ["deb", "none", "tiny"]
    base = {"id": "vm-1", "name": "x", "os": "deb"}
    with pytest.raises(InvalidParams, match="image 'deb' needs at least 3 GiB"):
        qemu.validate("vm", "create", {**base, "disk": 2})
    qemu.validate("vm", "create", {**base, "disk": 3})


@pytest.mark.skipif(guest.missing() is not None, reason=str(guest.missing()))
async def test_a_vm_is_a_directory_with_an_overlay_disk_until_deleted(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "deb.qcow2"), "1G"])
    qemu = provider(tmp_path, images)
    created = await qemu.apply(call("vm.create", id="vm-1", name="a", disk=2, os="deb", owner="u"))
    (change,) = created.resources
    assert (change.op, change.status, change.data["owner"]) == ("create", "stopped", "u")
    info = subprocess.run(
        ["qemu-img", "info", str(tmp_path / "vms" / "vm-1" / "disk.qcow2")],
        capture_output=True,
        text=True,
    ).stdout
    assert "backing file: " + str(images / "deb.qcow2") in info and "virtual size: 2 GiB" in info
    again = await qemu.apply(call("vm.create", id="vm-1", name="a", disk=2, os="deb", owner="u"))
    assert again.resources[0].op == "create"  # an interrupted attempt's retry: done
    with pytest.raises(PermanentProviderError, match="already exists"):
        await qemu.apply(call("vm.create", id="vm-1", name="b", disk=2, os="deb"))
    status = (await qemu.apply(call("vm.status", id="vm-1"))).result
    assert (status["state"], status["disk"], status["os"]) == ("stopped", 2, "deb")
    renamed = await qemu.apply(call("vm.update", id="vm-1", name="b", cpu=2))
    assert renamed.result == {"previous": {"name": "a", "cpu": 1}}
    await qemu.compensate(call("vm.update", id="vm-1", name="b", cpu=2), renamed)
    assert (await qemu.apply(call("vm.status", id="vm-1"))).result["name"] == "a"
    deleted = await qemu.apply(call("vm.delete", id="vm-1"))
    assert deleted.resources[0].op == "delete" and not (tmp_path / "vms" / "vm-1").exists()
    with pytest.raises(ResourceNotFound):
        await qemu.apply(call("vm.status", id="vm-1"))
    gone = await qemu.apply(call("vm.delete", id="vm-1"))
    assert gone.output == "vm vm-1 does not exist"


async def serial_shows(machine: Machine, text: bytes, patience: float = 300.0) -> None:
    """Wait until the guest has written `text` on its console (a safety net, not a
    measure: a TCG boot on a busy machine takes tens of seconds)."""
    log = machine.path("serial.log")
    async with asyncio.timeout(patience):
        while not (log.exists() and text in log.read_bytes()):
            await asyncio.sleep(0.2)


def alive(pid: int | None) -> bool:
    """A process that has not ended (a zombie waiting for init to reap it has)."""
    return pid is not None and start_ticks(pid) is not None


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_guest_boots_stops_gracefully_restarts_and_is_deleted(tmp_path, images):
    qemu = provider(tmp_path, images, stop_grace=120)
    machine = qemu.machine("vm-g")
    try:
        await qemu.apply(call("vm.create", id="vm-g", name="guest", memory=256, os="busybox"))
        started = await qemu.apply(call("vm.start", id="vm-g"))
        assert started.resources[0].status == "running"
        status = (await qemu.apply(call("vm.status", id="vm-g"))).result
        assert status["state"] == "running" and alive(status["pid"])
        first_pid = status["pid"]
        assert (await qemu.apply(call("vm.start", id="vm-g"))).resources == ()  # already
        await serial_shows(machine, guest.READY)
        stopped = await qemu.apply(call("vm.stop", id="vm-g"))
        # The guest powered itself off (acpid), not the hard stop after the grace: its
        # kernel says so on the console.
        assert b"reboot: Power down" in machine.path("serial.log").read_bytes()
        assert stopped.resources[0].status == "stopped"
        assert not alive(first_pid)
        assert (await qemu.apply(call("vm.status", id="vm-g"))).result["state"] == "stopped"
        with pytest.raises(PermanentProviderError, match="not running"):
            await qemu.apply(call("vm.restart", id="vm-g"))
        await qemu.apply(call("vm.start", id="vm-g"))
        machine.path("serial.log").write_bytes(b"")
        await serial_shows(machine, guest.READY)
        second = (await qemu.apply(call("vm.status", id="vm-g"))).result["pid"]
        await qemu.apply(call("vm.restart", id="vm-g"))
        third = (await qemu.apply(call("vm.status", id="vm-g"))).result
        assert third["state"] == "running" and third["pid"] != second
        assert not alive(second)
        await qemu.apply(call("vm.delete", id="vm-g"))
        assert not alive(third["pid"])
        assert not machine.root.exists()
    finally:
        running = machine.running() if machine.root.exists() else None
        if running is not None:
            await machine.kill(running)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_graceful_stop_during_the_boot_presses_the_button_again(tmp_path, images):
    # Stopped at once after its start, the guest is still booting: its ACPI daemon is
    # not listening yet and misses the first press; a later press powers it off.
    qemu = provider(tmp_path, images, stop_grace=300)
    machine = qemu.machine("vm-b")
    try:
        await qemu.apply(call("vm.create", id="vm-b", name="booting", memory=256, os="busybox"))
        await qemu.apply(call("vm.start", id="vm-b"))
        assert guest.READY not in machine.path("serial.log").read_bytes()
        stopped = await qemu.apply(call("vm.stop", id="vm-b"))
        assert stopped.resources[0].status == "stopped"
        log = machine.path("serial.log").read_bytes()
        assert guest.READY in log and b"reboot: Power down" in log, log[-2000:]
    finally:
        running = machine.running() if machine.root.exists() else None
        if running is not None:
            await machine.kill(running)
