"""Linux accounts through the API, in a prefix directory the test makes (`users.prefix`):
create, list, reset the password, delete. The host's own /etc is never touched (its
digests are compared before and after the module), and no password is stored or shown.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import backend
from tests.servers import OrchestratorProcess, provision_user, wait_for_workflow

PASSWORD = "Correct-Horse-Battery-1"
NEW_PASSWORD = "Second-Secret-Phrase-2"
HOST_FILES = [Path("/etc/passwd"), Path("/etc/shadow"), Path("/etc/group")]


def digests() -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in HOST_FILES if p.exists()}


@pytest.fixture(scope="module", autouse=True)
def host_etc_untouched() -> Iterator[None]:
    before = digests()
    yield
    assert digests() == before


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prefix")
    etc = root / "etc"
    etc.mkdir()
    (root / "home").mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    )
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    (etc / "group").write_text("root:x:0:\ndaemon:x:1:\ndevelopers:x:1500:\n")
    (etc / "gshadow").write_text("root:*::\ndaemon:*::\ndevelopers:!::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o600)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, prefix: Path) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("orchestrator"),
        env={
            "PROVISIONING_PROVIDERS__HOST__TYPE": "host",
            "PROVISIONING_PROVIDERS__HOST__USERS__PREFIX": str(prefix),
            "PROVISIONING_AUTH__MFA_REQUIRED_ROLES": "[]",
        },
    ).start()
    yield process
    process.stop()


@pytest.fixture
def admin(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    key = provision_user(server.data_dir, server.env, "host-admin", ["admin"])
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, timeout=60, headers=headers) as http:
        yield http


def shadow_hash(prefix: Path, username: str) -> str:
    for line in (prefix / "etc" / "shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == username:
            return fields[1]
    raise KeyError(username)


def crypt_matches(hashed: str, password: str) -> bool:
    """Recompute the SHA-512 crypt with the hash's own salt (openssl, not Python's
    deprecated `crypt`)."""
    _, scheme, salt, _ = hashed.split("$", 3)
    assert scheme == "6"
    out = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip() == hashed


def done(http: httpx.Client, response: httpx.Response) -> dict:
    assert response.status_code == 202, response.text
    workflow = wait_for_workflow(http, response.json()["data"]["workflow_id"], 60)
    assert workflow["status"] == "Completed", workflow
    return workflow


def users(http: httpx.Client) -> dict[str, dict]:
    response = http.get("/api/v1/host/users")
    assert response.status_code == 200, response.text
    return {u["username"]: u for u in response.json()["data"]["users"]}


def test_create_list_reset_delete(
    admin: httpx.Client, server: OrchestratorProcess, prefix: Path
) -> None:
    body = {"username": "alice", "password": PASSWORD, "groups": "developers", "wait": True}
    workflow = done(admin, admin.post("/host/users", json=body))
    alice = users(admin)["alice"]
    assert (alice["uid"], alice["home"], alice["shell"]) == ("1000", "/home/alice", "/bin/bash")
    assert not alice["system"] and users(admin)["daemon"]["system"]
    assert "developers:x:1500:alice" in (prefix / "etc" / "group").read_text()
    first = shadow_hash(prefix, "alice")
    assert crypt_matches(first, PASSWORD)

    response = admin.post("/host/users/alice/reset-password", json={"password": NEW_PASSWORD})
    done(admin, response)
    second = shadow_hash(prefix, "alice")
    assert second != first and crypt_matches(second, NEW_PASSWORD)

    # The passwords are nowhere: not in the tasks the API shows, the log, the database.
    tasks = admin.get("/tasks", params={"workflow_id": workflow["id"]}).text
    assert PASSWORD not in tasks
    assert PASSWORD not in server.log() and NEW_PASSWORD not in server.log()
    if not backend.ON_POSTGRES:
        stored = b"".join(p.read_bytes() for p in server.data_dir.glob("provisioning.db*"))
        assert PASSWORD.encode() not in stored and NEW_PASSWORD.encode() not in stored

    done(admin, admin.delete("/host/users/alice"))
    assert "alice" not in users(admin)
    assert "alice" not in (prefix / "etc" / "shadow").read_text()


@pytest.mark.both_stores
def test_a_rollback_deletes_the_account_created_since(admin: httpx.Client, prefix: Path) -> None:
    checkpoint = admin.post("/rollback/checkpoints", json={"name": "before bob"}).json()["data"]
    done(admin, admin.post("/host/users", json={"username": "bob", "password": PASSWORD}))
    assert "bob" in users(admin)
    rollback = admin.post("/rollback/execute", json={"checkpoint_id": checkpoint}).json()["data"]
    assert rollback["success"], rollback
    assert "bob" not in users(admin)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/host/users", {"username": "eve:0", "password": PASSWORD}),
        ("POST", "/host/users", {"username": "eve\nroot", "password": PASSWORD}),
        ("POST", "/host/users", {"username": "eve\n", "password": PASSWORD}),
        ("POST", "/host/users", {"username": "Eve", "password": PASSWORD}),
        ("POST", "/host/users", {"username": "-eve", "password": PASSWORD}),
        ("POST", "/host/users", {"username": "eve", "password": "short"}),
        ("POST", "/host/users", {"username": "eve", "password": "line\nroot::0:0"}),
        ("POST", "/host/users", {"username": "eve", "password": PASSWORD, "groups": "nosuch"}),
        ("POST", "/host/users", {"username": "root", "password": PASSWORD}),
        ("POST", "/host/users/daemon/reset-password", {"password": PASSWORD}),
        ("POST", "/host/users/nobody-here/reset-password", {"password": PASSWORD}),
        ("DELETE", "/host/users/root", None),
        ("DELETE", "/host/users/daemon", None),
        ("DELETE", "/host/users/a%3Ab", None),
    ],
)
def test_bad_input_and_system_accounts_are_refused(
    admin: httpx.Client, prefix: Path, method: str, path: str, body: object
) -> None:
    before = {name: (prefix / "etc" / name).read_bytes() for name in ("passwd", "shadow", "group")}
    response = admin.request(method, path, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert PASSWORD not in response.text
    after = {name: (prefix / "etc" / name).read_bytes() for name in ("passwd", "shadow", "group")}
    assert after == before


def test_an_operator_lists_but_does_not_create(client: httpx.Client) -> None:
    assert "root" in users(client)
    response = client.post("/host/users", json={"username": "mallory", "password": PASSWORD})
    assert response.status_code == 403, response.text
