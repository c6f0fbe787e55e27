#!/usr/bin/env python3
"""Seed 003's own Python client, unchanged, run against a live orchestrator.

    python examples/clients/seed_client.py [BASE_URL] [TOKEN]

The class below is the seed document's `ProvisioningClient` as written there; the part
under `__main__` submits the example workspace's `production` infra and polls the id it
gets back with `GET /tasks/{id}` until the workflow ends.
"""

import sys
import time

import requests


class ProvisioningClient:
    def __init__(self, base_url, token):
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def create_server_workflow(self, infra, settings, check_mode=False):
        payload = {"infra": infra, "settings": settings, "check_mode": check_mode, "wait": True}
        response = requests.post(
            f"{self.base_url}/workflows/servers/create", json=payload, headers=self.headers
        )
        return response.json()

    def get_task_status(self, task_id):
        response = requests.get(f"{self.base_url}/tasks/{task_id}", headers=self.headers)
        return response.json()


if __name__ == "__main__":
    base_url = sys.argv[1] if len(sys.argv) > 1 else "http://localhost:9090"
    token = sys.argv[2] if len(sys.argv) > 2 else "your-jwt-token"
    client = ProvisioningClient(base_url, token)
    result = client.create_server_workflow("production", "config.ncl")
    print(f"Task ID: {result['data']}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        task = client.get_task_status(result["data"])["data"]
        if task["status"] not in ("Pending", "Running"):
            break
        time.sleep(0.5)
    print(f"Status: {task['status']}  {task['output'] or task['error'] or ''}")
    sys.exit(0 if task["status"] == "Completed" else 1)
