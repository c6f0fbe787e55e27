#!/usr/bin/env python3
"""The Provisioning API's documented flow at one base URL: log in, run a workflow with
the reference `ProvisioningClient` (seed_client.py, unchanged), refresh the JWT with
the JWT itself, log out.

    python examples/clients/provisioning_login.py BASE_URL USERNAME PASSWORD [MFA_CODE]

Exits 0 when every step answered as documented.
"""

import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_client import ProvisioningClient


def main(base_url, username, password, mfa_code=None):
    body = {"username": username, "password": password}
    if mfa_code:
        body["mfa_code"] = mfa_code
    login = requests.post(f"{base_url}/auth/login", json=body, timeout=30).json()
    assert login["success"], login
    token = login["data"]["token"]
    print(f"Logged in as {login['data']['user']['username']} {login['data']['user']['roles']}")

    client = ProvisioningClient(base_url, token)
    result = client.create_server_workflow("production", "config.ncl")
    print(f"Task ID: {result['data']}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        task = client.get_task_status(result["data"])["data"]
        if task["status"] not in ("Pending", "Running"):
            break
        time.sleep(0.5)
    print(f"Status: {task['status']}")

    # POST /auth/refresh {"token": "current-jwt-token"}
    refreshed = requests.post(f"{base_url}/auth/refresh", json={"token": token}, timeout=30)
    refreshed = refreshed.json()
    assert refreshed["success"], refreshed
    new_token = refreshed["data"]["token"]
    print(f"Refreshed: new token expires at {refreshed['data']['expires_at']}")

    headers = {"Authorization": f"Bearer {new_token}"}
    out = requests.post(f"{base_url}/auth/logout", headers=headers, timeout=30).json()
    print(f"Logout: {out['data']}")
    after = requests.get(f"{base_url}/tasks", headers=headers, timeout=30)
    print(f"After logout: {after.status_code}")
    return task["status"] == "Completed" and after.status_code == 401


if __name__ == "__main__":
    sys.exit(0 if main(*sys.argv[1:5]) else 1)
