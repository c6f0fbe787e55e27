"""A real container engine for the tests: podman's Docker-compatible service on a unix
socket in a temporary directory, with the product's settings
(`providers.containers.podman`), an image built from Debian's `busybox-static` (busybox
httpd serves `$GREETING` on `$PORT`), and a local registry on loopback (Debian's
`docker-registry`, with htpasswd auth) holding it, so pulls and `registry_auth` are
exercised for real and nothing comes from the internet.

Everything it starts is stopped, and every container it ran removed, even when a test
fails; it checks that the host's firewall was left alone (no netavark chains).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Self

from providers.containers.podman import service_command, write_config

USERNAME, PASSWORD = "tester", "registry-secret-1"
SERVE = (
    'mkdir -p /www && echo \\"${GREETING:-hello}\\" > /www/index.html'
    ' && exec busybox httpd -f -v -p \\"$PORT\\" -h /www'
)
CONTAINERFILE = f"""\
FROM scratch
COPY busybox /bin/busybox
ENV PORT=8080
CMD ["/bin/busybox", "sh", "-c", "{SERVE}"]
"""
#: Never healthy: it answers nothing on any port.
BROKEN = """\
FROM scratch
COPY busybox /bin/busybox
CMD ["/bin/busybox", "sleep", "3600"]
"""


def missing() -> list[str]:
    """What the engine tests need and the machine lacks (`./dev test` installs them)."""
    needed = ["podman", "runc", "slirp4netns", "docker-registry"]
    absent = [name for name in needed if shutil.which(name) is None]
    if not Path("/bin/busybox").exists():
        absent.append("busybox-static")
    return absent


def _free_port() -> int:
    from tests.servers import free_port

    return free_port()


def _netavark_rules() -> str:
    try:
        out = subprocess.run(
            ["iptables-save"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return ""
    return "\n".join(line for line in out.splitlines() if "NETAVARK" in line)


class Engine:
    """The service, the registry and the images (see the module's docstring)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="provisioning-podman-"))
        self.socket = self.root / "podman.sock"
        self.registry_port = _free_port()
        self.registry = f"127.0.0.1:{self.registry_port}"
        self.image = f"{self.registry}/busybox-httpd:latest"
        self.image_v2 = f"{self.registry}/busybox-httpd:v2"
        self.broken = f"{self.registry}/busybox-broken:latest"
        self.env = {**os.environ, **write_config(self.root / "podman", [self.registry])}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.firewall_before = _netavark_rules()

    def start(self) -> Self:
        try:
            self._registry()
            self._service()
            self._images()
        except BaseException:
            self.stop()
            raise
        return self

    def podman(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", "--runtime", "runc", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with (self.root / log).open("ab") as out:
            process = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append(process)
        return process

    def _registry(self) -> None:
        import bcrypt

        data = self.root / "registry"
        data.mkdir()
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=6)).decode()
        (data / "htpasswd").write_text(f"{USERNAME}:{hashed}\n")
        (data / "config.yml").write_text(
            "version: 0.1\n"
            f"storage:\n  filesystem:\n    rootdirectory: {data}/store\n"
            f"http:\n  addr: {self.registry}\n"
            f"auth:\n  htpasswd:\n    realm: tests\n    path: {data}/htpasswd\n"
        )
        self._spawn(["docker-registry", "serve", str(data / "config.yml")], "registry.log")
        self._wait(lambda: _answers(f"http://{self.registry}/v2/"), "the registry")

    def _service(self) -> None:
        self._spawn(service_command(self.socket), "service.log")
        self._wait(self.socket.exists, "the podman service")

    def _images(self) -> None:
        context = self.root / "context"
        context.mkdir()
        shutil.copy("/bin/busybox", context / "busybox")
        (context / "Containerfile").write_text(CONTAINERFILE)
        (context / "Broken").write_text(BROKEN)
        self.podman("build", "--network", "none", "-t", self.image, str(context))
        self.podman("tag", self.image, self.image_v2)
        self.podman("build", "--network", "none", "-f", "Broken", "-t", self.broken, str(context))
        creds = f"{USERNAME}:{PASSWORD}"
        for image in (self.image, self.image_v2, self.broken):
            self.podman("push", "--creds", creds, image)
            self.podman("rmi", image)  # deployments must pull it from the registry

    def _wait(self, ready: object, what: str, patience: float = 60) -> None:
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if callable(ready) and ready():
                return
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{what} exited: see {self.root}")
            time.sleep(0.1)
        raise RuntimeError(f"{what} did not start within {patience} s: see {self.root}")

    def containers(self) -> list[str]:
        """The names of every container the engine has."""
        out = self.podman("ps", "-a", "--format", "{{.Names}}").stdout
        return [line for line in out.split() if line]

    def stop(self) -> None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            # Pods first (kube play's, tests/containers/test_kubernetes.py): their infra
            # containers go with them.
            subprocess.run(
                ["podman", "--runtime", "runc", "pod", "rm", "-af", "-t", "0"],
                env=self.env,
                capture_output=True,
                timeout=120,
                check=False,
            )
            subprocess.run(
                ["podman", "--runtime", "runc", "rm", "-af", "-t", "0"],
                env=self.env,
                capture_output=True,
                timeout=120,
                check=False,
            )
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        self.processes.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def firewall_untouched(self) -> bool:
        return _netavark_rules() == self.firewall_before


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True  # 401: it is up and wants credentials
    except OSError:
        return False
    return True
