#!/usr/bin/env python3
"""The account clients' flow at one base URL: register, log in by email, make an API
key, list the keys page by page, list the deployments with the key, and with --deploy
deploy an app with it, wait until it is ready, call it, and delete it.

    python examples/clients/account_flow.py BASE_URL [USERNAME]
        [--deploy IMAGE [--port 8080] [--registry-user U --registry-password P]]

`BASE_URL` is the server's address, for example http://localhost:9090; the script adds
/v1 as the account clients do. The server must allow registration
(`auth.registration_enabled`). Exits 0 when every step answered as documented (without
a container engine, the deployments listing answers 503 NO_RUNTIME_AVAILABLE: still 0).
"""

import argparse
import secrets
import sys
import time

import requests


def main(server, username=None, deploy=None):
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
    if deployments.status_code != 200:
        print(f"Deployments: {body['code']}: {body['error']}")
        return body["code"] == "NO_RUNTIME_AVAILABLE"
    print(f"Deployments: {body['data']}")
    if deploy is None:
        return True
    return deploy_app(base_url, {"Authorization": f"Bearer {key}"}, username, deploy)


def deploy_app(base_url, headers, username, deploy, patience=600):
    """Deploy one replica of `deploy.image`, wait until it is ready, call it, delete it."""
    spec = {"app_name": f"hello-{username}", "image": deploy.image, "port": deploy.port}
    if deploy.registry_user:
        spec["registry_auth"] = {
            "username": deploy.registry_user,
            "password": deploy.registry_password,
        }
    created = requests.post(f"{base_url}/deployments", json=spec, headers=headers, timeout=60)
    body = created.json()
    if created.status_code != 201:
        print(f"Deploy: {body['code']}: {body['error']}")
        return False
    ident = body["data"]["id"]
    print(f"Deploy: {created.status_code} {body['data']['status']}")
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        status = requests.get(
            f"{base_url}/deployments/{ident}/status", headers=headers, timeout=30
        ).json()["data"]
        replicas = status["replicas"]
        if status["status"] == "failed":
            break
        if replicas["desired"] and replicas["ready"] == replicas["desired"]:
            break
        time.sleep(1)
    print(f"Ready: {replicas['ready']}/{replicas['desired']}")
    url = requests.get(f"{base_url}/deployments/{ident}", headers=headers, timeout=30).json()[
        "data"
    ]["url"]
    print(f"Answer: {requests.get(url, timeout=30).text.strip()}")
    gone = requests.delete(f"{base_url}/deployments/{ident}", headers=headers, timeout=60)
    print(f"Delete: {gone.status_code}")
    # The delete is a workflow: the deployment is gone when it answers 404.
    while time.monotonic() < deadline:
        left = requests.get(f"{base_url}/deployments/{ident}", headers=headers, timeout=30)
        if left.status_code == 404:
            print("Deleted")
            break
        time.sleep(1)
    return replicas["ready"] == replicas["desired"] == 1 and left.status_code == 404


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server")
    parser.add_argument("username", nargs="?")
    parser.add_argument("--deploy", metavar="IMAGE", help="deploy this image, then delete it")
    parser.add_argument("--port", type=int, default=8080, help="the port the image serves")
    parser.add_argument("--registry-user")
    parser.add_argument("--registry-password")
    args = parser.parse_args()
    if args.deploy:
        args.image = args.deploy
    ok = main(args.server, args.username, args if args.deploy else None)
    sys.exit(0 if ok else 1)
