#!/usr/bin/env python3
"""The host API's documented Python client (`VaporAPI`, as written there) at one base
URL ending in /api/v1, after its documented login call.

    python examples/clients/host_client.py BASE_URL USERNAME PASSWORD

`BASE_URL` is the server's address, for example http://localhost:9090. Exits 0 when the
login worked and the containers listing answered with the envelope (without a
container runtime on the host: 503 NO_RUNTIME_AVAILABLE, still exit 0).
"""

import sys

import requests


class VaporAPI:
    def __init__(self, base_url, token):
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def get_containers(self):
        response = requests.get(f"{self.base_url}/containers", headers=self.headers)
        return response.json()

    def create_pod(self, pod_spec):
        response = requests.post(
            f"{self.base_url}/kubernetes/pods", headers=self.headers, json=pod_spec
        )
        return response.json()


def main(server, username, password):
    base_url = f"{server}/api/v1"
    # curl -X POST http://localhost:8080/api/v1/auth/login -d '{"username":…,"password":…}'
    login = requests.post(
        f"{base_url}/auth/login", json={"username": username, "password": password}, timeout=30
    ).json()
    token = login["data"]["token"]
    print(f"Token expires at {login['data']['expires_at']}")
    containers = VaporAPI(base_url, token).get_containers()
    if containers["success"]:
        print(f"Containers: {containers['data']['count']}")
        return True
    print(f"Containers: {containers['code']}: {containers['error']}")
    return containers["code"] in ("NO_RUNTIME_AVAILABLE", "DOCKER_ERROR")


if __name__ == "__main__":
    sys.exit(0 if main(*sys.argv[1:4]) else 1)
