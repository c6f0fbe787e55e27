"""Network namespaces made by the tests: the host's own namespace is never touched."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pyroute2 import IPRoute


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def veth_namespace() -> Iterator[tuple[str, str, str]]:
    """A fresh namespace holding a veth pair (both ends down): (namespace, end a, end b).
    Deleted on the way out, whatever happened (which removes the pair with it)."""
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    name = f"prov-test-{secrets.token_hex(4)}"
    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.decode()}")
    try:
        ip("-n", name, "link", "add", "pt-a", "type", "veth", "peer", "name", "pt-b")
        yield name, "pt-a", "pt-b"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def link(namespace: str, name: str) -> dict[str, Any]:
    """What the kernel says of one link, read through netlink in the namespace."""
    with IPRoute(netns=namespace, flags=0) as ipr:
        (found,) = ipr.link("get", ifname=name)
        index = found["index"]
        # Not the link-local IPv6 address the kernel gives a link that comes up.
        addresses = [
            f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ipr.addr("dump", index=index)
            if a["scope"] != 253
        ]
        routes = [
            r.get("RTA_GATEWAY") for r in ipr.route("dump", oif=index) if r.get("RTA_GATEWAY")
        ]
    return {"up": bool(found["flags"] & 1), "addresses": addresses, "gateways": routes}
