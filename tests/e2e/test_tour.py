"""The README's tour, command by command, as a newcomer runs it: against a control
center and an orchestrator started as `./dev run` starts them (with QEMU for the VM
steps), with the CLI in a subprocess, on a terminal where the tour needs one (the
rollback's confirmation, the VM's console).

The commands are read from the README itself and must be exactly the ones below, in
order: a change to the tour fails this test until the step that checks it changes too.
Only what a reader fills in is substituted: the one-time password, TOTP codes, the ids
the tour says to copy, the server's address, and the token of `$TOKEN`."""

from __future__ import annotations

import os
import re
import select
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.control_center.servers import ADMIN_PASSWORD, JWT_SECRET, ControlCenterProcess
from tests.servers import PROVISIONING, REPO, OrchestratorProcess
from tests.vms import guest
from tests.vms.conftest import images  # noqa: F401  (the guest image directory)

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

NEW_PASSWORD = "Tour-Own-Password-2026"
TOUR = re.compile(r"## A tour\n.*?```sh\n(.*?)```", re.S)
#: The quick start's second block: the first one is `./dev run`.
QUICKSTART = re.compile(r"```sh\n.*?```.*?```sh\n(.*?)```", re.S)


def commands_in(document: Path, block: re.Pattern[str]) -> list[str]:
    """A shell block's commands as the document shows them, without comments and blank
    lines."""
    found = block.search(document.read_text())
    assert found, f"{document.name} has no such block"
    lines = [line.split("  #")[0].rstrip() for line in found.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@dataclass
class Tour:
    """The reader's terminal: the servers, the CLI's own config directory, and what the
    reader copies from one command's output into the next."""

    center: ControlCenterProcess
    orchestrator: OrchestratorProcess
    config_home: Path
    copied: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONING_")}
        return {
            **base,
            "XDG_CONFIG_HOME": str(self.config_home),
            "PROVISIONING_URL": self.orchestrator.url,
            "PROVISIONING_CC_URL": self.center.url,
            "PATH": f"{Path(PROVISIONING).parent}:{base.get('PATH', '')}",
        }

    def run(self, command: str, typed: str = "") -> subprocess.CompletedProcess[str]:
        """A command without a terminal; `typed` is its stdin."""
        done = subprocess.run(
            shlex.split(command),
            env=self.env(),
            input=typed,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=REPO,
            start_new_session=True,  # no controlling terminal: hidden prompts read stdin
        )
        self.outputs.append(done.stdout + done.stderr)
        return done

    def on_terminal(self, command: str, script: list[tuple[str, bytes]]) -> tuple[int, str]:
        """A command on a pseudo-terminal: for each (text, keys) of `script`, wait until
        the output shows `text`, then type `keys`. Returns the exit status and output."""
        main, other = os.openpty()
        process = subprocess.Popen(
            shlex.split(command),
            env=self.env(),
            stdin=other,
            stdout=other,
            stderr=other,
            cwd=REPO,
            start_new_session=True,
        )
        os.close(other)
        output = bytearray()
        steps = list(script)
        deadline = time.monotonic() + 600  # a safety net, not a measure
        try:
            while time.monotonic() < deadline:
                while steps and steps[0][0].encode() in output:
                    os.write(main, steps.pop(0)[1])
                ready, _, _ = select.select([main], [], [], 1)
                if not ready:
                    if process.poll() is not None:
                        break
                    continue
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the other side closed: the command ended
                    break
                if not chunk:
                    break
                output += chunk
            status = process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            os.close(main)
        text = output.decode(errors="replace").replace("\r\n", "\n")
        self.outputs.append(text)
        return status, text


@pytest.fixture
def tour(
    tmp_path_factory: pytest.TempPathFactory,
    images: Path,  # noqa: F811
) -> Iterator[Tour]:
    data = tmp_path_factory.mktemp("tour")
    center = ControlCenterProcess(data).start()
    orchestrator = OrchestratorProcess(
        data,
        env={
            "PROVISIONING_AUTH__JWT_SECRET": JWT_SECRET,
            "PROVISIONING_PROVIDERS__QEMU__IMAGES": str(images),
        },
    )
    try:
        orchestrator.start()
        yield Tour(center, orchestrator, tmp_path_factory.mktemp("tour-config"))
    finally:
        orchestrator.stop()
        center.stop()
        guest.kill_all(data / "vms")


def _code(secret: str, after: str | None = None) -> str:
    """A current TOTP code; with `after`, the next one that differs from it (a code works
    once: the reader waits for the next one, as the CLI says, and the server accepts
    the code of the next 30-second step as current, for clocks a little apart)."""
    totp = pyotp.TOTP(secret)
    code = totp.now()
    if code == after:
        code = totp.at(time.time() + 30)
    return code


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _first_admin(tour: Tour, step: Iterator[str]) -> None:
    """The first five steps of both documents: the first administrator's login with the
    one-time password, TOTP enrollment, a new password, a login with a code."""
    # Asked for the password; no terminal here, so it is read from stdin.
    done = tour.run(next(step), typed=ADMIN_PASSWORD + "\n")
    assert "logged in to" in _ok(done) and "as admin (admin)" in done.stdout
    assert "one-time password" in done.stderr  # the note says what to do first

    enrolled = _ok(tour.run(next(step)))
    secret = re.search(r"secret:\s+(\S+)", enrolled)
    assert secret, enrolled
    verify_code = _code(secret.group(1))
    verified = _ok(tour.run(next(step).replace("123456", verify_code)))
    assert "backup codes" in verified

    changed = tour.run(next(step), typed=f"{ADMIN_PASSWORD}\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert _ok(changed).strip() == "password changed"

    login = next(step).replace("654321", _code(secret.group(1), after=verify_code))
    done = tour.run(login, typed=NEW_PASSWORD + "\n")
    assert "as admin (admin)" in _ok(done)
    assert "note:" not in done.stderr  # no duty left: MFA on, own password


def test_the_quickstart_works_as_written(tour: Tour) -> None:
    commands = commands_in(REPO / "docs" / "quickstart.md", QUICKSTART)
    expected = [
        "source .venv/bin/activate",
        "provisioning login -u admin",
        "provisioning mfa enroll",
        "provisioning mfa verify 123456",
        "provisioning password",
        "provisioning login -u admin --mfa-code 654321",
        "provisioning users create alice --email alice@example.com --role operator",
        "provisioning workflow servers create --infra production --wait",
        "provisioning workflow taskserv create kubernetes --infra production --wait",
        "provisioning workflow cluster create buildkit --infra production --check --wait",
        "provisioning tasks list",
        "provisioning workflow list",
    ]
    assert commands == expected, "the quick start changed: update this test with it"
    step = iter(commands[1:])
    _first_admin(tour, step)
    alice = "Her-Own-Password-77"
    made = _ok(tour.run(next(step), typed=f"{alice}\n{alice}\n"))
    assert made.startswith("created user alice (operator): "), made
    servers = _ok(tour.run(next(step)))
    assert "Completed: 3/3 tasks" in servers, servers
    assert "Completed" in _ok(tour.run(next(step)))
    check = _ok(tour.run(next(step)))
    assert "Completed" in check and "check" in check.lower(), check
    tasks = _ok(tour.run(next(step)))
    assert "server web-01" in tasks and "kubernetes" in tasks, tasks
    workflows = _ok(tour.run(next(step)))
    assert workflows.count("Completed") >= 3, workflows
    assert alice not in "\n".join(tour.outputs)


def test_the_readme_tour_works_as_written(tour: Tour) -> None:
    commands = commands_in(REPO / "README.md", TOUR)
    expected = [
        "source .venv/bin/activate",
        "provisioning login -u admin",
        "provisioning mfa enroll",
        "provisioning mfa verify 123456",
        "provisioning password",
        "provisioning login -u admin --mfa-code 654321",
        "provisioning workflow servers create --infra production --wait",
        "provisioning tasks list",
        "provisioning batch submit examples/batches/multi_cloud.yaml --wait",
        "provisioning batch submit examples/batches/upgrade_that_fails.yaml --wait",
        "provisioning providers",
        'provisioning checkpoint create before_web_09 -d "before web-09"',
        'provisioning apply upcloud server create -p name=web-09 -p "plan=1xCPU-2 GB" '
        "-p zone=de-fra1 --wait",
        "provisioning resources list --kind server",
        "provisioning rollback --checkpoint <id>",
        "provisioning resources list --kind server",
        "provisioning vm create test-vm --memory 256 --disk 1 --wait",
        "provisioning vm list",
        "provisioning vm console <id>",
        "TOKEN=$(provisioning api-keys create demo)",
        'curl -s -H "Authorization: Bearer $TOKEN" localhost:9090/tasks | jq .',
        'python examples/clients/seed_client.py http://localhost:9090 "$TOKEN"',
    ]
    assert commands == expected, "the README's tour changed: update this test with it"
    step = iter(commands[1:])  # `source .venv/bin/activate`: the test runs the .venv's CLI
    _first_admin(tour, step)

    created = _ok(tour.run(next(step)))
    assert "Completed" in created
    tasks = _ok(tour.run(next(step)))
    assert all(f"server {name}" in tasks for name in ("web-01", "web-02", "db-01")), tasks

    multi = _ok(tour.run(next(step)))
    assert "Completed" in multi
    failing = tour.run(next(step))
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "rolled back" in (failing.stdout + failing.stderr).lower()

    providers = _ok(tour.run(next(step)))
    assert "upcloud" in providers and "qemu" in providers

    checkpoint_id = _ok(tour.run(next(step))).strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", checkpoint_id), checkpoint_id
    assert "Completed" in _ok(tour.run(next(step)))
    listed = _ok(tour.run(next(step)))
    assert re.search(r"upcloud\s+server\s+web-09\s+active", listed), listed

    # The rollback asks on a terminal; the reader answers y, and sees what was undone.
    status, undone = tour.on_terminal(
        next(step).replace("<id>", checkpoint_id), [("undo the work completed", b"y\n")]
    )
    assert status == 0, undone
    assert re.search(r"rollback \S+ Completed: [1-9]\d* undone, 0 failed", undone), undone
    assert re.search(r"completed\s+undo create server web-09", undone), undone
    after = _ok(tour.run(next(step)))
    assert "web-09" not in after and "web-01" in after, after

    vm = _ok(tour.run(next(step)))
    vm_id = re.search(r"^id\s+(\S+)", vm, re.M)
    assert vm_id and re.search(r"^status\s+running", vm, re.M), vm
    assert "test-vm" in _ok(tour.run(next(step)))
    status, console = tour.on_terminal(
        next(step).replace("<id>", vm_id.group(1)), [("Ctrl-] detaches", b"\x1d")]
    )
    assert status == 0 and "connected; Ctrl-] detaches" in console, console

    # TOKEN=$(provisioning api-keys create demo): the key alone on stdout.
    token = _ok(tour.run(next(step).removeprefix("TOKEN=$(").removesuffix(")"))).strip()
    assert token.startswith("prov_") and "\n" not in token
    # curl … | jq .: the same request, read as JSON.
    curl = next(step)
    assert "localhost:9090/tasks" in curl
    answer = httpx.get(
        f"{tour.orchestrator.url}/tasks", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200 and answer.json()["data"], answer.text
    seed = next(step).replace("http://localhost:9090", tour.orchestrator.url)
    seed = seed.replace('"$TOKEN"', token).replace("python ", f"{sys.executable} ", 1)
    assert "Completed" in _ok(tour.run(seed))

    # No command printed a password.
    everything = "\n".join(tour.outputs)
    assert ADMIN_PASSWORD not in everything and NEW_PASSWORD not in everything
