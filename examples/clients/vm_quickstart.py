#!/usr/bin/env python3
"""The VM API's quick start, in Python, at one base URL ending in /api/v1: log in
(`POST /api/v1/auth/login`), list the virtual machines, and with --create make one,
start it, wait until it runs, and (with --delete) delete it again.

    python examples/clients/vm_quickstart.py BASE_URL USERNAME PASSWORD
        [--create [--os ubuntu20.04] [--cpu 2] [--memory 2048] [--disk 20] [--delete]]

`BASE_URL` is the server's address, for example http://localhost:9090; the script adds
/api/v1 as the VM API's clients do. `--os` names an image of the server's image
directory (`none`: a blank disk); the defaults are the VM API document's example. Exits
0 when every step answered as documented (without a hypervisor on the host the list
says so, 503 NO_HYPERVISOR, and that is still 0).
"""

import argparse
import sys
import time

import requests


def main(server, username, password, create=None):
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
    if create is None:
        return vms.status_code == 200

    spec = {
        "name": "test-vm",
        "cpu": create.cpu,
        "memory": create.memory,
        "disk": create.disk,
        "os": create.os,
    }
    made = requests.post(f"{base_url}/vms", json=spec, headers=headers, timeout=60).json()
    if not made["success"]:
        print(f"Create: {made['code']}: {made['error']}")
        return False
    vm_id = made["data"]["id"]
    print(f"Created: {vm_id} ({made['data']['status']})")
    # A new VM boots by itself; one that was made stopped is started, as the SDK does.
    status = wait_for(base_url, headers, vm_id, ("running", "stopped"))
    if status == "stopped":
        started = requests.post(f"{base_url}/vms/{vm_id}/start", headers=headers, timeout=60)
        print(f"Start: {started.json()['success']}")
        status = wait_for(base_url, headers, vm_id, ("running",))
    print(f"Status: {status}")
    if create.delete:
        gone = requests.delete(f"{base_url}/vms/{vm_id}", headers=headers, timeout=60)
        print(f"Delete: {gone.status_code}")
        status = wait_for(base_url, headers, vm_id, ())
        print(f"After delete: {status or 'gone'}")
    return status in ("running", None)


def wait_for(base_url, headers, vm_id, wanted, patience=600):
    """Poll the VM until its status is one of `wanted`, or "error"; None once it is gone."""
    deadline = time.monotonic() + patience
    status = None
    while time.monotonic() < deadline:
        answer = requests.get(f"{base_url}/vms/{vm_id}", headers=headers, timeout=30)
        if answer.status_code == 404:
            return None
        status = answer.json()["data"]["status"]
        if status in wanted or status == "error":
            return status
        time.sleep(1)
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server")
    parser.add_argument("username")
    parser.add_argument("password")
    parser.add_argument("--create", action="store_true", help="make a VM and start it")
    parser.add_argument("--os", default="ubuntu20.04")
    parser.add_argument("--cpu", type=int, default=2)
    parser.add_argument("--memory", type=int, default=2048, help="MB")
    parser.add_argument("--disk", type=int, default=20, help="GB")
    parser.add_argument("--delete", action="store_true", help="delete the VM at the end")
    args = parser.parse_args()
    ok = main(args.server, args.username, args.password, args if args.create else None)
    sys.exit(0 if ok else 1)
