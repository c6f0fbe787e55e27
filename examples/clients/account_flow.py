#!/usr/bin/env python3
"""The account clients' flow at one base URL: register, log in by email, make an API
key, list the keys page by page, list the deployments with the key.

    python examples/clients/account_flow.py BASE_URL [USERNAME]

`BASE_URL` is the server's address, for example http://localhost:9090; the script adds
/v1 as the account clients do. The server must allow registration
(`auth.registration_enabled`). Exits 0 when every step answered as documented (without
a container engine, the deployments listing answers 503 NO_RUNTIME_AVAILABLE: still 0).
"""

import secrets
import sys

import requests


def main(server, username=None):
    base_url = f"{server}/v1"
    username = username or f"user-{secrets.token_hex(4)}"
    email = f"{username}@example.com"
    password = f"Pw-{secrets.token_urlsafe(12)}-9"

    registered = requests.post(
        f"{base_url}/auth/register",
        json={
            "username": username,
            "email": email,
            "password": password,
            "confirm_password": password,
        },
        timeout=30,
    )
    print(f"Register: {registered.status_code}")
    if registered.status_code != 201:
        print(registered.json()["error"])
        return False

    login = requests.post(
        f"{base_url}/auth/login", json={"email": email, "password": password}, timeout=30
    ).json()
    access_token = login["data"]["access_token"]
    headers = {"Authorization": f"Bearer {access_token}"}

    created = requests.post(
        f"{base_url}/api-keys",
        json={"name": "ci", "description": "deployments from CI"},
        headers=headers,
        timeout=30,
    ).json()
    key = created["data"]["key"]
    print(f"API key: {created['data']['key_prefix']}… (shown once)")
    requests.post(
        f"{base_url}/api-keys",
        json={"name": "spare", "description": ""},
        headers=headers,
        timeout=30,
    )
    second_page = requests.get(
        f"{base_url}/api-keys", params={"page": 2, "limit": 1}, headers=headers, timeout=30
    )
    print(
        f"API keys: {second_page.headers['X-Total-Count']}, page 2: "
        f"{[k['name'] for k in second_page.json()['data']]}"
    )

    deployments = requests.get(
        f"{base_url}/deployments", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    body = deployments.json()
    if deployments.status_code == 200:
        print(f"Deployments: {body['data']}")
        return True
    print(f"Deployments: {body['code']}: {body['error']}")
    return body["code"] == "NO_RUNTIME_AVAILABLE"


if __name__ == "__main__":
    sys.exit(0 if main(*sys.argv[1:3]) else 1)
