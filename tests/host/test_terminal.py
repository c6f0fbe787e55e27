"""`/ws/terminal` (seed 000): a shell on a pseudo-terminal, for administrators with MFA,
off unless the host instance turns it on, checked again while it lasts, audited.

One real orchestrator with two host instances: `host` with the terminal on (a short
recheck interval, so a revocation shows quickly) and `plain`, configured as by default.
`auth.mfa_required_roles` is empty, so an administrator without MFA gets past the
guard's own MFA rule and only the terminal's refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pyotp
import pytest
import sqlalchemy
import websockets

from control_center.store.models import AuditRecord
from tests.api.accounts import login_at, new_user
from tests.backend import fetch
from tests.servers import PROVISIONING, OrchestratorProcess, provision_user

#: A safety net against a hang, not a measure (the machine may be shared and busy).
PATIENCE = 120.0
#: Where a command's output starts: a line of its own, or after the prompt (when what
#: was typed is echoed before the shell first prompts).
LINE = r"(?:\r\n|# )"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("terminal"),
        env={
            "PROVISIONING_PROVIDERS__HOST__TYPE": "host",
            "PROVISIONING_PROVIDERS__HOST__TERMINAL__ENABLED": "true",
            "PROVISIONING_PROVIDERS__HOST__TERMINAL__SHELL": "/bin/sh",
            "PROVISIONING_PROVIDERS__HOST__TERMINAL__RECHECK_INTERVAL": "0.2",
            "PROVISIONING_PROVIDERS__PLAIN__TYPE": "host",
            "PROVISIONING_AUTH__MFA_REQUIRED_ROLES": "[]",
            "PROVISIONING_AUTH__RATE_LIMIT_AUTH": "10000",
        },
    ).start()
    yield process
    process.stop()


def _data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["data"]


def session_token(server: OrchestratorProcess, roles: list[str], *, mfa: bool) -> str:
    """A session token of a new user with `roles`, logged in with a TOTP code if `mfa`."""
    return session_tokens(server, roles, mfa=mfa)[-1]


def session_tokens(server: OrchestratorProcess, roles: list[str], *, mfa: bool) -> list[str]:
    """A new user's session token from a login without MFA, and (if `mfa`) then, after
    enrolling TOTP, a second session's token, from a login with a code."""
    user = new_user(server, roles)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        token = _data(login_at(http, user["username"], user["password"]))["token"]
        if not mfa:
            return [token]
        auth = {"Authorization": f"Bearer {token}"}
        secret = _data(http.post("/auth/mfa/enroll", headers=auth))["secret"]
        _data(http.post("/auth/mfa/verify", headers=auth, json={"code": pyotp.TOTP(secret).now()}))
        # The next step's code: the one just spent may not be used twice.
        code = pyotp.TOTP(secret).at(time.time() + 30)
        return [
            token,
            str(_data(login_at(http, user["username"], user["password"], code))["token"]),
        ]


@dataclass
class Session:
    ws: Any
    output: str = ""

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def type(self, text: str) -> None:
        await self.send({"type": "input", "data": text})

    async def until(self, pattern: str) -> re.Match[str]:
        """Read output until `pattern` matches what came after the last match."""
        while True:
            found = re.search(pattern, self.output)
            if found:
                self.output = self.output[found.end() :]
                return found
            message = json.loads(await asyncio.wait_for(self.ws.recv(), PATIENCE))
            assert message["type"] == "output", message
            self.output += message["data"]

    async def next_other(self) -> dict[str, Any]:
        """The next message that is not output (an error, the exit)."""
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), PATIENCE))
            if message["type"] != "output":
                return dict(message)


def url(server: OrchestratorProcess, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/ws/terminal{query}"


async def opened(server: OrchestratorProcess, token: str, **size: int) -> Session:
    ws = await websockets.connect(url(server, "?instance=host"))
    await ws.send(json.dumps({"type": "auth", "payload": {"token": token}}))
    await ws.send(json.dumps({"type": "subscribe", "payload": {"cols": 80, "rows": 24, **size}}))
    return Session(ws)


async def refusal(server: OrchestratorProcess, token: str) -> dict[str, Any]:
    session = await opened(server, token)
    async with session.ws:
        message = await session.next_other()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(session.ws.recv(), PATIENCE)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    return message


def audit(server: OrchestratorProcess, action: str) -> list[dict[str, Any]]:
    table = AuditRecord.__table__
    rows = fetch(server.database, sqlalchemy.select(table).order_by(table.c.seq))
    return [row for row in rows if row["action"] == action]


def wait_for(check: Any, what: str) -> Any:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {PATIENCE} s: {what}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_terminal_is_off_unless_the_instance_turns_it_on(server: OrchestratorProcess) -> None:
    token = session_token(server, ["admin"], mfa=True)

    async def attempt() -> websockets.InvalidStatus:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url(server, f"?instance=plain&token={token}"))
        return refused.value

    refused = asyncio.run(attempt())
    assert refused.response.status_code == 403
    body = json.loads(refused.response.body or b"{}")
    assert body["code"] == "TERMINAL_DISABLED" and "terminal.enabled" in body["error"]


@pytest.mark.both_stores
def test_an_administrator_with_mfa_gets_a_shell_sized_audited_and_cleaned_up(
    server: OrchestratorProcess,
) -> None:
    token = session_token(server, ["admin"], mfa=True)

    async def work() -> tuple[int, int]:
        session = await opened(server, token, cols=100, rows=30)
        async with session.ws:
            await session.type("echo hi\n")
            await session.until(LINE + r"hi\r\n")
            await session.type("stty size\n")
            assert (await session.until(LINE + r"(\d+) (\d+)\r\n")).groups() == ("30", "100")
            await session.send({"type": "resize", "payload": {"cols": 132, "rows": 43}})
            await session.type("stty size\n")
            assert (await session.until(LINE + r"(\d+) (\d+)\r\n")).groups() == ("43", "132")
            # A background job has a process group of its own: it must go too.
            await session.type("sleep 1000 & echo SHELL=$$ JOB=$!\n")
            found = await session.until(r"SHELL=(\d+) JOB=(\d+)\r\n")
            shell, job = int(found.group(1)), int(found.group(2))
            assert psutil.Process(job).status() != psutil.STATUS_ZOMBIE
        return shell, job

    shell, job = asyncio.run(work())
    wait_for(lambda: gone(shell) and gone(job), "the shell and its job end with the socket")
    end = wait_for(lambda: audit(server, "terminal.end"), "the session's end is audited")[-1]
    start = next(
        r
        for r in audit(server, "terminal.start")
        if r["result"] == "success" and r["details"]["session_id"] == end["details"]["session_id"]
    )
    assert (start["resource"], start["details"]["pid"]) == ("host:terminal", shell)
    assert (start["details"]["cols"], start["details"]["rows"]) == (100, 30)
    assert start["details"]["shell"] == "/bin/sh"
    typed = len("echo hi\nstty size\nstty size\nsleep 1000 & echo SHELL=$$ JOB=$!\n")
    assert end["details"]["bytes_in"] == typed
    assert end["details"]["bytes_out"] > typed  # the echo of what was typed, and more
    assert end["details"]["reason"] == "the client closed the socket"
    assert end["user_id"] == start["user_id"] is not None


def test_the_shell_exiting_ends_the_session_with_its_status(server: OrchestratorProcess) -> None:
    token = session_token(server, ["admin"], mfa=True)

    async def work() -> dict[str, Any]:
        session = await opened(server, token)
        async with session.ws:
            await session.type("exit 3\n")
            return await session.next_other()

    assert asyncio.run(work()) == {"type": "exit", "code": 3}


def test_a_viewer_and_an_administrator_without_mfa_are_refused(
    server: OrchestratorProcess,
) -> None:
    viewer = session_token(server, ["viewer"], mfa=True)
    message = asyncio.run(refusal(server, viewer))
    assert message["code"] == "FORBIDDEN", message
    operator = provision_user(server.data_dir, server.env, "terminal-operator", ["operator"])
    assert asyncio.run(refusal(server, operator))["code"] == "FORBIDDEN"
    no_mfa = session_token(server, ["admin"], mfa=False)
    message = asyncio.run(refusal(server, no_mfa))
    assert message["code"] == "MFA_REQUIRED" and "multi-factor" in message["error"], message
    # A session that began before its user enrolled TOTP proved no second factor: only
    # a login with a code does (the session remembers it, through its refreshes too).
    before, after = session_tokens(server, ["admin"], mfa=True)
    message = asyncio.run(refusal(server, before))
    assert message["code"] == "MFA_REQUIRED", message
    with httpx.Client(base_url=server.url, timeout=30) as http:
        renewed = _data(http.post("/auth/refresh", json={"token": after}))["token"]

    async def shell_exits() -> dict[str, Any]:
        session = await opened(server, renewed)
        async with session.ws:
            await session.type("exit 4\n")
            return await session.next_other()

    assert asyncio.run(shell_exits()) == {"type": "exit", "code": 4}
    # An administrator's API key proves no second factor either.
    key = provision_user(server.data_dir, server.env, "terminal-admin-key", ["admin"])
    assert asyncio.run(refusal(server, key))["code"] == "MFA_REQUIRED"
    denied = [r for r in audit(server, "terminal.start") if r["result"] == "denied"]
    assert {r["details"]["code"] for r in denied} >= {"FORBIDDEN", "MFA_REQUIRED"}


def test_revoking_the_token_ends_the_session(server: OrchestratorProcess) -> None:
    token = session_token(server, ["admin"], mfa=True)

    async def work() -> tuple[dict[str, Any], int, int]:
        session = await opened(server, token)
        async with session.ws:
            await session.type("echo SHELL=$$\n")
            shell = int((await session.until(r"SHELL=(\d+)\r\n")).group(1))
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                out = await http.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
                assert out.status_code == 200, out.text
            message = await session.next_other()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(session.ws.recv(), PATIENCE)
        assert closed.value.rcvd is not None
        return message, closed.value.rcvd.code, shell

    message, code, shell = asyncio.run(work())
    assert (message["type"], message["code"], code) == ("error", "UNAUTHORIZED", 1008)
    assert "revoked" in message["error"]
    wait_for(lambda: gone(shell), "the shell ends with the revoked session")
    ends = wait_for(
        lambda: [r for r in audit(server, "terminal.end") if "revoked" in r["details"]["reason"]],
        "the end is audited with its reason",
    )
    assert ends[-1]["details"]["reason"].startswith("UNAUTHORIZED")


def test_bad_messages_are_answered_and_a_bad_size_is_refused(server: OrchestratorProcess) -> None:
    token = session_token(server, ["admin"], mfa=True)

    async def work() -> tuple[dict[str, Any], dict[str, Any]]:
        session = await opened(server, token)
        async with session.ws:
            await session.send({"type": "dance"})
            wrong = await session.next_other()
            await session.type("echo still here\n")
            await session.until(LINE + r"still here\r\n")
        session = await opened(server, token, cols=0)
        async with session.ws:
            return wrong, await session.next_other()

    wrong, refused = asyncio.run(work())
    assert wrong["code"] == "INVALID_INPUT" and "dance" in wrong["error"]
    assert refused["code"] == "INVALID_INPUT" and "cols" in refused["error"]


def test_the_cli_types_its_input_and_exits_with_the_shells_status(
    server: OrchestratorProcess,
) -> None:
    token = session_token(server, ["admin"], mfa=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONING_")}
    env = {**base, "PROVISIONING_URL": server.url, "PROVISIONING_TOKEN": token}
    done = subprocess.run(
        [PROVISIONING, "host", "--instance", "host", "terminal"],
        input="echo hi\nexit 5\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 5, done.stderr
    # (Universal newlines.) The shell's "hi" comes on a line of its own or after its
    # prompt: the whole input may be echoed before the shell first reads.
    assert re.search(r"(?:^|\n|# )hi\n", done.stdout), done.stdout
    refused = subprocess.run(
        [PROVISIONING, "host", "--instance", "plain", "terminal"],
        input="echo hi\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert refused.returncode == 1
    assert "TERMINAL_DISABLED" in refused.stderr and "hi" not in refused.stdout


def test_the_cli_at_a_terminal_goes_raw_sends_its_size_and_restores_the_terminal(
    server: OrchestratorProcess,
) -> None:
    token = session_token(server, ["admin"], mfa=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONING_")}
    env = {**base, "PROVISIONING_URL": server.url, "PROVISIONING_TOKEN": token}
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        before = termios.tcgetattr(slave)
        cli = subprocess.Popen(
            [PROVISIONING, "host", "--instance", "host", "terminal"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        try:
            seen = b""
            deadline = time.monotonic() + PATIENCE
            typed = False
            while cli.poll() is None and time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.1)
                if ready:
                    seen += os.read(master, 65536)
                if not typed and seen.partition(b"detaches")[2].strip():  # the shell's prompt
                    # Raw mode: a carriage return, as a terminal sends Enter.
                    os.write(master, b"stty size; exit 7\r")
                    typed = True
            with contextlib.suppress(OSError):
                while select.select([master], [], [], 0.2)[0]:
                    seen += os.read(master, 65536)
            assert cli.wait(PATIENCE) == 7, seen
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        assert b"33 101" in seen, seen
        assert termios.tcgetattr(slave) == before  # cooked again, as it was
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture(scope="module")
def short_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrchestratorProcess]:
    """Tokens that expire in 15 s, and a recheck interval far longer: only the expiry
    can end a session in time."""
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("terminal-expiry"),
        env={
            "PROVISIONING_PROVIDERS__HOST__TYPE": "host",
            "PROVISIONING_PROVIDERS__HOST__TERMINAL__ENABLED": "true",
            "PROVISIONING_PROVIDERS__HOST__TERMINAL__SHELL": "/bin/sh",
            "PROVISIONING_PROVIDERS__HOST__TERMINAL__RECHECK_INTERVAL": "300",
            "PROVISIONING_AUTH__ACCESS_TOKEN_TTL": "15",
            "PROVISIONING_AUTH__RATE_LIMIT_AUTH": "10000",
        },
    ).start()
    yield process
    process.stop()


def test_the_session_ends_when_its_token_expires(short_tokens: OrchestratorProcess) -> None:
    token = session_token(short_tokens, ["admin"], mfa=True)

    async def work() -> dict[str, Any]:
        session = await opened(short_tokens, token)
        async with session.ws:
            await session.type("echo SHELL=$$\n")
            await session.until(r"SHELL=\d+\r\n")
            return await session.next_other()

    message = asyncio.run(work())
    assert (message["type"], message["code"]) == ("error", "UNAUTHORIZED"), message
    assert "expired" in message["error"]
