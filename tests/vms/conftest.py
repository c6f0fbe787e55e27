"""Fixtures of the VM tests: the busybox guest image, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vms import guest


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image directory with the `busybox` guest (skips where QEMU or the guest's
    packages are missing: `./dev test` installs them)."""
    guest.require()
    root = tmp_path_factory.mktemp("vm-images")
    guest.make_image(root)
    return root
