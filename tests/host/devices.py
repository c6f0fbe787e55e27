"""File-backed loop devices made by the tests, detached (and unmounted) whatever
happens; and a `mkfs.ext4` that logs each call and reaches the real one only for them."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def loop_devices(directory: Path, count: int, size: int = 64 << 20) -> Iterator[list[str]]:
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    made: list[str] = []
    try:
        for index in range(count):
            image = directory / f"disk{index}.img"
            with image.open("wb") as file:
                file.truncate(size)
            try:
                out = subprocess.run(
                    ["losetup", "--find", "--show", str(image)],
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"cannot make a loop device here: {exc.stderr}")
            made.append(out.stdout.strip())
        yield made
    finally:
        for device in made:
            for point in mount_points(device):
                subprocess.run(["umount", "-l", point], check=False, timeout=30)
            subprocess.run(["losetup", "-d", device], check=False, timeout=30)


def mount_points(device: str) -> list[str]:
    """Where the device is mounted, from the mount table."""
    st = os.stat(device)
    number = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[2] == number
    ]


def root_device() -> str | None:
    """The block device holding `/` (None when it is no block device: overlay, …)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            link = Path(f"/sys/dev/block/{fields[2]}")
            return f"/dev/{link.resolve().name}" if link.exists() else None
    return None


def probe(device: str) -> dict[str, str]:
    out = subprocess.run(
        ["blkid", "-p", "-o", "export", device], capture_output=True, text=True, timeout=30
    )
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def logging_mkfs(directory: Path, allowed: list[str]) -> tuple[Path, Path]:
    """A directory holding a `mkfs.ext4` that appends its arguments to a log, then runs
    the real one only on `allowed` devices (a safety net: a refusal the product missed
    shows in the log, and still formats nothing else). Returns (directory, log)."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    log = directory / "mkfs.log"
    log.touch()
    real = shutil.which("mkfs.ext4")
    assert real is not None
    cases = "|".join(allowed)
    script = bin_dir / "mkfs.ext4"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        "for last; do :; done\n"
        f'case "$last" in {cases}) exec "{real}" "$@" ;; esac\n'
        'echo "the test refuses to format $last" >&2\n'
        "exit 1\n"
    )
    script.chmod(0o755)
    return bin_dir, log
