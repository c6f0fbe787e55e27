"""A podman service with the settings that work on these machines, for the `containers`
type's `socket` (docs/deployments.md, "The engine").

`podman system service` serves the Docker Engine REST API on a unix socket. The
settings it needs here, written by `write_config` into a directory of its own:

- `runtime = "runc"`: crun is not what Debian's podman finds working in a container;
- containers get the user-mode `slirp4netns` network (the provider also asks for it on
  each container: through the Docker-compatible API a container otherwise gets the
  `bridge` network, whose netavark firewall rules would change the host's iptables);
  ports are published by slirp4netns's own port forwarder, on loopback;
- `default_ulimits = []`: the host's limits, not podman's raised defaults (which an
  unprivileged container cannot set);
- `cgroup_manager = "cgroupfs"` and `events_logger = "file"`: no systemd or journald;
- storage (`vfs`), run and temporary directories under the same directory, so the
  service shares nothing with another podman on the machine;
- registries: no unqualified search (nothing resolves to docker.io), and the given
  plain-HTTP registries (a local one on loopback) allowed.

`environment(root)` is what a `podman` command or service needs to use them; images are
built with `podman build --network none` (a `RUN` step would otherwise use `bridge`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

CONTAINERS_CONF = """\
[containers]
netns = "slirp4netns"
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{root}/tmp"

[network]
default_rootless_network_cmd = "slirp4netns"
"""

STORAGE_CONF = """\
[storage]
driver = "vfs"
runroot = "{root}/run"
graphroot = "{root}/storage"
"""

REGISTRY = """
[[registry]]
location = "{location}"
insecure = true
"""


def write_config(root: Path, insecure_registries: Iterable[str] = ()) -> dict[str, str]:
    """Write the settings into `root` (created); the environment that selects them."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("tmp", "run", "storage"):
        (root / sub).mkdir(exist_ok=True)
    (root / "containers.conf").write_text(CONTAINERS_CONF.format(root=root))
    (root / "storage.conf").write_text(STORAGE_CONF.format(root=root))
    registries = 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n'
    registries += "".join(REGISTRY.format(location=r) for r in insecure_registries)
    (root / "registries.conf").write_text(registries)
    return environment(root)


def environment(root: Path) -> dict[str, str]:
    return {
        "CONTAINERS_CONF": str(root / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
    }


def service_command(socket: Path) -> list[str]:
    """The service on `socket`, serving until stopped (`--time 0`)."""
    return ["podman", "--runtime", "runc", "system", "service", "--time", "0", f"unix://{socket}"]
