"""Disks, format, mount and unmount through the API, on loop devices the test makes.

The `host` instance may format only the first loop device (and, to prove the other
rules refuse it, the root device); mounts go under a directory of the test. `mkfs.ext4`
on the orchestrator's PATH is a wrapper that logs each call: a refused format never
reaches it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.host.devices import logging_mkfs, loop_devices, mount_points, probe, root_device
from tests.servers import OrchestratorProcess, provision_user, wait_for_workflow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage")


@pytest.fixture(scope="module")
def devices(workdir: Path) -> Iterator[list[str]]:
    with loop_devices(workdir, 2) as made:
        yield made


@pytest.fixture(scope="module")
def mkfs(workdir: Path, devices: list[str]) -> tuple[Path, Path]:
    return logging_mkfs(workdir, [devices[0]])


@pytest.fixture(scope="module")
def mount_root(workdir: Path) -> Path:
    root = workdir / "mnt"
    root.mkdir()
    return root


@pytest.fixture(scope="module")
def server(
    workdir: Path, devices: list[str], mkfs: tuple[Path, Path], mount_root: Path
) -> Iterator[OrchestratorProcess]:
    allowed = [devices[0], *([root_device()] if root_device() else [])]
    process = OrchestratorProcess(
        workdir / "data",
        env={
            "PROVISIONING_PROVIDERS__HOST__TYPE": "host",
            "PROVISIONING_PROVIDERS__HOST__STORAGE__ALLOWED_DEVICES": str(allowed).replace(
                "'", '"'
            ),
            "PROVISIONING_PROVIDERS__HOST__STORAGE__MOUNT_ROOT": str(mount_root),
            "PROVISIONING_AUTH__MFA_REQUIRED_ROLES": "[]",
            "PATH": f"{mkfs[0]}:{os.environ['PATH']}",
        },
    ).start()
    yield process
    process.stop()


@pytest.fixture
def admin(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    key = provision_user(server.data_dir, server.env, "host-admin", ["admin"])
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, timeout=120, headers=headers) as http:
        yield http


def calls(mkfs: tuple[Path, Path]) -> list[str]:
    return mkfs[1].read_text().splitlines()


def done(http: httpx.Client, response: httpx.Response, status: str = "Completed") -> dict:
    assert response.status_code == 202, response.text
    workflow = wait_for_workflow(http, response.json()["data"]["workflow_id"], 120)
    assert workflow["status"] == status, workflow
    return workflow


def refused(response: httpx.Response, field: str, words: str) -> None:
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert message.startswith(f"{field}:") and words in message, message


def test_the_disks_are_listed(client: httpx.Client, devices: list[str]) -> None:
    response = client.get("/api/v1/storage/disks")
    assert response.status_code == 200, response.text
    disks = {d["path"]: d for d in response.json()["data"]["disks"]}
    for device in devices:
        assert disks[device]["size"] == 64 << 20
        assert disks[device]["type"] == "loop"
        assert disks[device]["partitions"] == []


def test_format_mount_write_unmount(
    admin: httpx.Client, devices: list[str], mkfs: tuple[Path, Path], mount_root: Path
) -> None:
    device = devices[0]
    body = {"device": device, "filesystem": "ext4", "label": "DATA", "wait": True}
    done(admin, admin.post("/storage/format", json=body))
    assert probe(device)["TYPE"] == "ext4" and probe(device)["LABEL"] == "DATA"
    assert calls(mkfs) == [f"-F -L DATA {device}"]
    listed = {d["path"]: d for d in admin.get("/storage/disks").json()["data"]["disks"]}
    assert (listed[device]["filesystem"], listed[device]["label"]) == ("ext4", "DATA")

    point = mount_root / "data"
    body = {"device": device, "mount_point": str(point), "options": "rw,noatime", "wait": True}
    done(admin, admin.post("/storage/mount", json=body))
    assert mount_points(device) == [str(point)]
    (point / "hello.txt").write_text("written on the mounted filesystem")
    listed = {d["path"]: d for d in admin.get("/storage/disks").json()["data"]["disks"]}
    assert listed[device]["mount_point"] == str(point)
    assert listed[device]["used"] > 0 and listed[device]["available"] > 0

    # Mounted: formatting it is refused at submit, and never reaches mkfs.
    body = {"device": device, "filesystem": "ext4", "wait": True}
    refused(admin.post("/storage/format", json=body), "device", "is mounted")
    assert calls(mkfs) == [f"-F -L DATA {device}"]

    done(admin, admin.post("/storage/unmount", json={"device": device, "wait": True}))
    assert mount_points(device) == []
    # Mounted again, the file is there: unmount kept the filesystem.
    body = {"device": device, "mount_point": str(point), "wait": True}
    done(admin, admin.post("/storage/mount", json=body))
    assert (point / "hello.txt").read_text() == "written on the mounted filesystem"
    done(admin, admin.post("/storage/unmount", json={"device": device, "wait": True}))


def test_refused_formats_never_reach_mkfs(
    admin: httpx.Client, devices: list[str], mkfs: tuple[Path, Path]
) -> None:
    before = calls(mkfs)
    outside = {"device": devices[1], "filesystem": "ext4", "wait": True}
    refused(admin.post("/storage/format", json=outside), "device", "not among the devices")
    root = root_device()
    if root is not None:
        # Allowed by the instance's list, and still refused: it holds `/`.
        response = admin.post("/storage/format", json={"device": root, "wait": True})
        refused(response, "device", "root filesystem")
    for bad in ("/dev/../dev/loop0", f"{devices[0]}/../vda", "/etc/passwd", "/dev/null"):
        response = admin.post("/storage/format", json={"device": bad, "wait": True})
        assert response.status_code == 422, response.text
    # Through the generic entry point and POST /workflows alike.
    response = admin.post("/providers/host/storage/format", json={"params": {"device": devices[1]}})
    refused(response, "params.device", "not among the devices")
    task = {"name": "f", "provider": "host", "action": "storage.format", "params": outside}
    response = admin.post("/workflows", json={"name": "w", "tasks": [task]})
    assert response.status_code == 422, response.text
    assert calls(mkfs) == before
    assert probe(devices[1]) == {}


def test_check_mode_formats_nothing(
    admin: httpx.Client, devices: list[str], mkfs: tuple[Path, Path]
) -> None:
    before, holds = calls(mkfs), probe(devices[0])
    body = {"device": devices[0], "label": "OTHER", "check_mode": True, "wait": True}
    workflow = done(admin, admin.post("/storage/format", json=body))
    (task,) = admin.get("/tasks", params={"workflow_id": workflow["id"]}).json()["data"]
    assert "would run: mkfs.ext4 -F -L OTHER" in task["output"]
    assert calls(mkfs) == before and probe(devices[0]) == holds


def test_mounts_stay_under_the_root_with_safe_options(
    admin: httpx.Client, devices: list[str], mount_root: Path
) -> None:
    device = devices[0]
    for point, options, field in [
        ("/etc", None, "mount_point"),
        (str(mount_root), None, "mount_point"),
        (f"{mount_root}/../escape", None, "mount_point"),
        (f"{mount_root}/x", "rw,suid", "options"),
        (f"{mount_root}/x", "rw,dev", "options"),
        (f"{mount_root}/x", "rw,X-mount.mkdir", "options"),
        (f"{mount_root}/x", "rw\nsuid", "options"),
    ]:
        body = {"device": device, "mount_point": point, "options": options, "wait": True}
        response = admin.post("/storage/mount", json=body)
        assert response.status_code == 422, (point, options, response.text)
        assert field in response.json()["error"], response.text
    assert mount_points(device) == []


def test_a_rollback_unmounts_and_reports_a_format_irreversible(
    admin: httpx.Client, devices: list[str], mount_root: Path
) -> None:
    device = devices[0]
    checkpoint = admin.post("/rollback/checkpoints", json={"name": "before"}).json()["data"]
    body = {"device": device, "mount_point": str(mount_root / "rb"), "wait": True}
    done(admin, admin.post("/storage/mount", json=body))
    assert mount_points(device) == [str(mount_root / "rb")]
    rollback = admin.post("/rollback/execute", json={"checkpoint_id": checkpoint}).json()["data"]
    assert rollback["success"], rollback
    assert mount_points(device) == []

    checkpoint = admin.post("/rollback/checkpoints", json={"name": "before"}).json()["data"]
    done(admin, admin.post("/storage/format", json={"device": device, "wait": True}))
    rollback = admin.post("/rollback/execute", json={"checkpoint_id": checkpoint}).json()["data"]
    assert not rollback["success"] and rollback["operations_failed"] == 1, rollback


def test_an_operator_may_list_but_not_format(client: httpx.Client, devices: list[str]) -> None:
    assert client.get("/storage/disks").status_code == 200
    response = client.post("/storage/format", json={"device": devices[0]})
    assert response.status_code == 403, response.text
