"""`provisioning serve` starts both apps whole or not at all, and both log alike.

- a taken port stops the start before anything listens, naming the setting to change;
- the control center ending (a crash) stops the orchestrator, and `serve` exits non-zero;
- SIGKILL to `serve` takes the control center with it;
- both apps write one log format: JSON lines when stderr is not a terminal.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import backend
from tests.servers import EXAMPLE_WORKSPACE, PROVISIONING, free_port, interruptible

#: A safety net, not a measure: a busy machine starts slowly.
TIMEOUT = 120


class Serve:
    """`provisioning serve` (both apps) on free ports and a data directory of its own."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.ports = {"orchestrator": free_port(), "control center": free_port()}
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROVISIONING_")},
            "PROVISIONING_DATA_DIR": str(data_dir),
            **backend.database_env(data_dir),
            "PROVISIONING_WORKSPACE_ROOT": str(EXAMPLE_WORKSPACE),
            "PROVISIONING_SERVER__PORT": str(self.ports["orchestrator"]),
            "PROVISIONING_CONTROL_CENTER__PORT": str(self.ports["control center"]),
            **env,
        }
        self.process: subprocess.Popen[str] | None = None

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PROVISIONING, "serve"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def start(self) -> subprocess.Popen[str]:
        """Start it; return once both apps answer `/health`."""
        self.process = subprocess.Popen(
            [PROVISIONING, "serve"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a group of its own, as a terminal's job
            preexec_fn=interruptible,
        )
        deadline = time.monotonic() + TIMEOUT
        for port in self.ports.values():
            while not answers(port):
                assert self.process.poll() is None, self.process.communicate()
                assert time.monotonic() < deadline, "serve did not become healthy"
                time.sleep(0.05)
        return self.process

    def stop(self) -> tuple[str, str]:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.communicate(timeout=TIMEOUT)


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until_closed(port: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while listening(port):
        assert time.monotonic() < deadline, f"port {port} is still listening"
        time.sleep(0.05)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    service = Serve(tmp_path / "data")
    yield service
    if service.process is not None and service.process.poll() is None:
        service.process.kill()
        service.process.communicate(timeout=TIMEOUT)


def test_a_taken_control_center_port_stops_serve_naming_the_setting(serve):
    port = serve.ports["control center"]
    with socket.create_server(("127.0.0.1", port)):
        done = serve.run()
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: cannot listen on 127.0.0.1:{port}: the address is already in use; "
        "choose another port with control_center.port (PROVISIONING_CONTROL_CENTER__PORT)"
    )
    assert "listening" not in done.stdout  # the orchestrator never started
    assert not listening(serve.ports["orchestrator"])


def test_a_taken_orchestrator_port_starts_no_control_center(serve):
    port = serve.ports["orchestrator"]
    with socket.create_server(("127.0.0.1", port)):
        done = serve.run()
    assert done.returncode == 1
    assert "choose another port with server.port (PROVISIONING_SERVER__PORT" in done.stderr
    assert not listening(serve.ports["control center"])


def test_the_control_center_ending_stops_the_orchestrator(serve):
    process = serve.start()
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGKILL)  # the control center crashes
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1
    assert (
        "error: the control center stopped (exit status -9; its message is above), "
        "so the orchestrator was stopped too"
    ) in stderr
    assert not listening(serve.ports["orchestrator"])


def test_ctrl_c_stops_both_cleanly(serve):
    """Ctrl-C on a terminal sends SIGINT to the whole group: both apps stop, exit 0."""
    process = serve.start()
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    assert "control center stopped" not in stderr
    assert stdout.rstrip().endswith("orchestrator stopped")
    for port in serve.ports.values():
        assert not listening(port)


def test_sigkill_to_serve_takes_the_control_center_with_it(serve):
    process = serve.start()
    process.kill()
    process.communicate(timeout=TIMEOUT)
    wait_until_closed(serve.ports["control center"])  # fails if it is left running
    # The same ports and data directory start again, whole.
    serve.start()
    serve.stop()


def test_both_apps_log_json_lines_when_stderr_is_not_a_terminal(serve):
    serve.start()
    _, stderr = serve.stop()
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    others = [line for line in stderr.splitlines() if line and not line.startswith("{")]
    assert others == []  # every line is a JSON record: neither app logs plain text
    started = [r for r in records if r["event"].startswith("Started server process")]
    assert len(started) == 2  # uvicorn's line, from each app's process
    for record in records:
        assert {"event", "level", "logger", "timestamp"} <= record.keys()
    assert any(r["logger"] == "orchestrator.service" for r in records)


def test_serve_takes_config_after_the_command_as_dev_run_passes_it(serve, tmp_path):
    """`./dev run --config FILE` runs `provisioning serve --config FILE`."""
    port = free_port()
    config = tmp_path / "ports.toml"
    config.write_text(f"[control_center]\nport = {port}\n")
    env = {k: v for k, v in serve.env.items() if k != "PROVISIONING_CONTROL_CENTER__PORT"}
    with socket.create_server(("127.0.0.1", port)):
        done = subprocess.run(
            [PROVISIONING, "serve", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr  # the file's port
