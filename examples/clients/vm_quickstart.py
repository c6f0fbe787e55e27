#!/usr/bin/env python3
"""The VM API's quick start, in Python, at one base URL ending in /api/v1: log in
(`POST /api/v1/auth/login`), list the virtual machines, and with --create make one and
start it.

    python examples/clients/vm_quickstart.py BASE_URL USERNAME PASSWORD [--create]

`BASE_URL` is the server's address, for example http://localhost:9090; the script adds
/api/v1 as the VM API's clients do. Exits 0 when the VM API answered the list (without
a hypervisor on the host it says so: 503 NO_HYPERVISOR, still exit 0).
"""

import sys

import requests


def main(server, username, password, create=False):
    base_url = f"{server}/api/v1"
    response = requests.post(
        f"{base_url}/auth/login", json={"username": username, "password": password}, timeout=30
    )
    token = response.json()["data"]["token"]
    headers = {"Authorization": f"Bearer {token}"}

    vms = requests.get(f"{base_url}/vms", headers=headers, timeout=30)
    if vms.status_code == 503:
        print(f"VM API: {vms.json()['code']}: {vms.json()['error']}")
        return vms.json()["code"] == "NO_HYPERVISOR"
    print(f"VMs: {len(vms.json()['data'])}")
    if create:
        spec = {"name": "test-vm", "cpu": 2, "memory": 2048, "disk": 20, "os": "ubuntu20.04"}
        made = requests.post(f"{base_url}/vms", json=spec, headers=headers, timeout=60).json()
        print(f"Created: {made['data']['id']}")
        started = requests.post(
            f"{base_url}/vms/{made['data']['id']}/start", headers=headers, timeout=60
        ).json()
        print(f"Start: {started['success']}")
    return vms.status_code == 200


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--create"]
    sys.exit(0 if main(*args[:3], create="--create" in sys.argv) else 1)
